import BlobStore
import Cache
import DepotTestSupport
import Eviction
import Foundation
import Glance
import Testing

/// Integrity to the last byte: a blob is trusted only while it matches the Catalog, and a
/// response whose body ends at the image's last byte never completes with unverified bytes.
@Suite(.serialized) struct IntegrityTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func aTruncatedBlobIsQuarantinedAndTheRequestIsServedAsAMiss() async throws {
        let bytes = pseudoRandomBytes(count: 10_000, seed: 501)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try await withDepot(glanceURL: glance.url) { depot in
            let client = try await WireClient()
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            _ = try await client.exchange("GET", url, headers: alice)
            #expect(try await client.exchange("GET", url, headers: alice).header("x-depot-cache") == "hit")
            let digest = Digest.of(bytes, algorithm: .sha256)
            #expect(truncate(depot.store.path(for: digest), 4000) == 0)

            // The event-loop path sees the mismatch too; the request goes on as a miss.
            let answer = try await client.exchange("GET", url, headers: alice)
            #expect(answer.error == nil)
            #expect(answer.status == 200)
            #expect(answer.body == bytes, "all 10000 bytes, refilled from the backend")
            #expect(answer.header("content-length") == "10000")
            #expect(answer.header("content-md5") == image.checksum)
            #expect(answer.header("x-depot-cache") == "miss")
            #expect(depot.dir.files(under: "quarantine").count == 1)
            let quarantined = depot.cache.integrity.snapshot["quarantined_blobs"] as? [String: Int]
            #expect(quarantined?["size"] == 1)
            let again = try await client.exchange("GET", url, headers: alice)
            #expect(again.body == bytes)
            #expect(again.header("x-depot-cache") == "hit")

            // Truncated again: a range and glanceclient's own download (which checks the MD5) get the image.
            _ = truncate(depot.store.path(for: digest), 4000)
            let range = try await client.exchange("GET", url, headers: alice + [("Range", "bytes=9000-")])
            #expect(range.status == 206 && range.body == Array(bytes[9000...]))
            _ = truncate(depot.store.path(for: digest), 10)
            let file = depot.dir.path + "/downloaded"
            let download = try await glanceCLI(depot.url, token: GlanceServer.alice, ["image-download", "--file", file, image.id])
            #expect(download.status == 0, "\(download.output)")
            #expect(FileManager.default.contents(atPath: file).map(Array.init) == bytes)
        }
    }

    /// Every body that ends at the image's last byte, on every path that sends bytes not yet
    /// verified, holds that byte until the whole image is; a wrong image is cut short.
    @Test func aRangeThatEndsAtTheLastByteNeverCompletesWithBytesThatFailGlancesHash() async throws {
        let size = 3 << 20
        let bytes = pseudoRandomBytes(count: size, seed: 502)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try rotStoredByte(glance, imageID: image.id, at: 1_000, of: bytes)
        try await withDepot(glanceURL: glance.url) { fills in
            var tiny = CacheSettings.testing
            tiny.budget = Watermarks(budget: 1 << 20)
            try await withDepot(glanceURL: glance.url, settings: tiny) { bypass in
                let client = try await WireClient()
                let url = "/v2/images/\(image.id)/file"
                for range in ["bytes=0-", "bytes=0-\(size - 1)", "bytes=-\(size)", "bytes=\(size / 2)-", "bytes=-1", "bytes=0-9,\(size - 10)-"] {
                    for (name, depot) in [("fill", fills), ("no copy", bypass)] {
                        let answer = try await client.exchange("GET", depot.url + url, headers: [("X-Auth-Token", GlanceServer.alice), ("Range", range)])
                        #expect(answer.error != nil || !(200..<300).contains(answer.status), "\(name) \(range): \(answer.status), \(answer.body.count) bytes")
                        #expect(try depot.store.allDigests().isEmpty)
                    }
                }
                // curl resuming a download whose first half it has: the rest must not complete either.
                let partial = fills.dir.path + "/partial"
                _ = FileManager.default.createFile(atPath: partial, contents: Data(bytes[..<(size / 2)]))
                let resumed = try await spawn("/usr/bin/curl", ["-s", "-C", "-", "-o", partial, "-H", "X-Auth-Token: \(GlanceServer.alice)", fills.url + url])
                #expect(resumed.status == 18, "curl -C - reports a partial transfer (exit \(resumed.status))")
                #expect((try FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int ?? 0) < size)
            }
        }
    }

    /// Fills whose commit waits for the Catalog (here another process holds its write lock; a
    /// slow disk's WAL sync is the everyday case) wait on Depot's disk pool, not on Swift's
    /// cooperative pool, whose threads (one per core) every request needs: as many such waits
    /// as cores stopped every request until the lock's 10 s timeout failed the fills.
    @Test func fillsWaitingForTheCatalogDoNotStopOtherRequests() async throws {
        let count = max(2, ProcessInfo.processInfo.activeProcessorCount)
        var images: [(GlanceImage, [UInt8])] = []
        for n in 0..<count {
            let bytes = pseudoRandomBytes(count: 1 << 20 | n, seed: UInt64(510 + n))
            images.append((try await uploadImage(glanceAsAlice(glance.url), bytes), bytes))
        }
        try await withDepot(glanceURL: glance.url) { depot in
            let lock = try await CatalogLock(depot)
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            let urls = images.map { "\(depot.url)/v2/images/\($0.0.id)/file" }
            let misses = urls.map { url in Task { try await WireClient().exchange("GET", url, headers: alice) } }
            // Every fill has its bytes and waits to commit (a client's last byte waits for that).
            while ContinuousClock.now < lock.deadline, !(0..<count).allSatisfy({ n in
                depot.cache.runningFill(cloud: "default_RegionOne", imageID: images[n].0.id).map { $0.written == UInt64(images[n].1.count) } ?? false
            }) {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(200))
            // A request that joins one of those fills (Swift concurrency's path) is answered meanwhile:
            // timed from the lock, as a stalled pool would delay this test's own clock reads too.
            let head = try await WireClient().exchange("GET", urls[0], headers: alice + [("Range", "bytes=0-9")])
            #expect(head.status == 206 && head.body == Array(images[0].1.prefix(10)))
            #expect(head.header("x-depot-cache") == "shared")
            lock.expectNoRequestWaited()
            #expect((0..<count).allSatisfy { depot.cache.runningFill(cloud: "default_RegionOne", imageID: images[$0].0.id) != nil })

            try await lock.release()
            for (miss, (_, bytes)) in zip(misses, images) {
                let answer = try await miss.value
                #expect(answer.error == nil && answer.status == 200)
                #expect(answer.body == bytes)
            }
            for n in 0..<count {
                let hit = try await WireClient().exchange("GET", urls[n], headers: alice)
                #expect(hit.body == images[n].1)
                #expect(hit.header("x-depot-cache") == "hit")
            }
        }
    }

    /// Images resolved by hash to a blob Depot holds (the same bytes under other ids) have
    /// their mapping recorded on the disk pool: one wait per core for the Catalog's lock on
    /// the cooperative pool stopped every request.
    @Test func resolutionsWaitingForTheCatalogDoNotStopOtherRequests() async throws {
        let count = max(2, ProcessInfo.processInfo.activeProcessorCount)
        let bytes = pseudoRandomBytes(count: 1 << 20, seed: 512)
        let cached = try await uploadImage(glanceAsAlice(glance.url), bytes)
        var twins: [GlanceImage] = []
        for _ in 0..<count { twins.append(try await uploadImage(glanceAsAlice(glance.url), bytes)) }
        try await withDepot(glanceURL: glance.url) { depot in
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            #expect(try await WireClient().exchange("GET", "\(depot.url)/v2/images/\(cached.id)/file", headers: alice).body == bytes)
            // Its digest pass written too: no other write of Depot's waits for the lock.
            let digest = Digest.of(bytes, algorithm: .sha256)
            while try depot.catalog.blob(digest)?.md5 == nil { try await Task.sleep(for: .milliseconds(20)) }

            let lock = try await CatalogLock(depot)
            let answered = AnswerCount()
            let hits = twins.map { twin in
                answered.start { try await WireClient().exchange("GET", "\(depot.url)/v2/images/\(twin.id)/file", headers: alice) }
            }
            // Time for each to be authorized (one call to Glance) and to wait to record its mapping.
            try await Task.sleep(for: .milliseconds(1500))
            let show = try await WireClient().exchange("GET", "\(depot.url)/v2/images/\(cached.id)", headers: alice)
            #expect(show.status == 200)
            // The lock's timeout (10 s) would have ended the resolutions' waits first.
            lock.expectNoRequestWaited()
            #expect(answered.count.load(ordering: .relaxed) == 0)

            try await lock.release()
            for (hit, twin) in zip(hits, twins) {
                let answer = try await hit.value
                #expect(answer.status == 200 && answer.body == bytes)
                #expect(answer.header("x-depot-cache") == "hit")
                #expect(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: twin.id)?.digest == digest)
            }
        }
    }

    /// A blob found damaged on a hit is quarantined on the disk pool: its Catalog writes wait
    /// for the lock there, not on the cooperative pool, whose threads every request needs.
    @Test func quarantinesWaitingForTheCatalogDoNotStopOtherRequests() async throws {
        let count = max(2, ProcessInfo.processInfo.activeProcessorCount)
        var images: [(GlanceImage, [UInt8])] = []
        for n in 0..<count {
            let bytes = pseudoRandomBytes(count: 100_000 + n, seed: UInt64(514 + n))
            images.append((try await uploadImage(glanceAsAlice(glance.url), bytes), bytes))
        }
        try await withDepot(glanceURL: glance.url) { depot in
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            let urls = images.map { "\(depot.url)/v2/images/\($0.0.id)/file" }
            for (url, (_, bytes)) in zip(urls, images) {
                #expect(try await WireClient().exchange("GET", url, headers: alice).body == bytes)
                let digest = Digest.of(bytes, algorithm: .sha256)
                while try depot.catalog.blob(digest)?.md5 == nil { try await Task.sleep(for: .milliseconds(20)) }
                #expect(truncate(depot.store.path(for: digest), 4000) == 0)
            }

            let lock = try await CatalogLock(depot)
            let answered = AnswerCount()
            let requests = urls.map { url in
                answered.start { try await WireClient().exchange("GET", url, headers: alice) }
            }
            // Every blob is moved away, and its quarantine waits to update the Catalog.
            while ContinuousClock.now < lock.deadline, depot.dir.files(under: "quarantine").count < count {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(200))
            let show = try await WireClient().exchange("GET", "\(depot.url)/v2/images/\(images[0].0.id)", headers: alice)
            #expect(show.status == 200)
            // The lock's timeout (10 s) would have ended the quarantines' waits first.
            lock.expectNoRequestWaited()
            #expect(answered.count.load(ordering: .relaxed) == 0)

            try await lock.release()
            for (request, (_, bytes)) in zip(requests, images) {
                let answer = try await request.value
                #expect(answer.status == 200 && answer.body == bytes)
                #expect(answer.header("x-depot-cache") == "miss")
            }
            #expect((depot.cache.integrity.snapshot["quarantined_blobs"] as? [String: Int])?["size"] == count)
        }
    }

    /// Images deleted through Depot are dropped from the Catalog on the disk pool before the
    /// answer: one wait per core for its lock on the cooperative pool stopped every request.
    @Test func deletesWaitingForTheCatalogDoNotStopOtherRequests() async throws {
        let count = max(2, ProcessInfo.processInfo.activeProcessorCount)
        var images: [GlanceImage] = []
        for n in 0...count {
            images.append(try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 1000, seed: UInt64(520 + n))))
        }
        let other = images.removeLast()
        try await withDepot(glanceURL: glance.url) { depot in
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            let lock = try await CatalogLock(depot)
            let answered = AnswerCount()
            let deletes = images.map { image in
                answered.start { try await WireClient().exchange("DELETE", "\(depot.url)/v2/images/\(image.id)", headers: alice) }
            }
            // Glance deleted every image, and Depot waits to drop it.
            var deleted = false
            while !deleted, ContinuousClock.now < lock.deadline {
                try await Task.sleep(for: .milliseconds(20))
                deleted = true
                for image in images where (try? await glanceAsAlice(glance.url).showImage(image.id)) != nil { deleted = false }
            }
            try await Task.sleep(for: .milliseconds(200))
            let show = try await WireClient().exchange("GET", "\(depot.url)/v2/images/\(other.id)", headers: alice)
            #expect(show.status == 200)
            // The lock's timeout (10 s) would have ended the deletes' waits first.
            lock.expectNoRequestWaited()
            #expect(answered.count.load(ordering: .relaxed) == 0)

            try await lock.release()
            for delete in deletes { #expect(try await delete.value.status == 204) }
        }
    }

    @Test func aRangeFarAheadOfAFillWaitsForTheFillsVerdictBeforeItsLastByte() async throws {
        let size = 24 << 20
        let bytes = pseudoRandomBytes(count: size, seed: 503)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try rotStoredByte(glance, imageID: image.id, at: 1_000, of: bytes)
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        proxy.setFaults { $0.bytesPerSecond = 6 << 20 }
        try await withDepot(glanceURL: proxy.url) { depot in
            let client = try await WireClient(), other = try await WireClient()
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let whole = Task { try await other.exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice)]) }
            while depot.cache.runningFill(cloud: "default_RegionOne", imageID: image.id) == nil { try await Task.sleep(for: .milliseconds(10)) }
            // The bytes of this range are Glance's good ones (the rotten byte is at 1000), but the
            // image as a whole does not verify: its last byte must not arrive.
            let ahead = try await client.exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice), ("Range", "bytes=\(20 << 20)-")])
            #expect(ahead.header("x-depot-cache") == "miss")
            #expect(ahead.error != nil, "cut short: \(ahead.status), \(ahead.body.count) bytes")
            #expect(ahead.body.count < size - (20 << 20))
            let first = try await whole.value
            #expect(first.error != nil)
            #expect(try depot.store.allDigests().isEmpty)

            // With good bytes, the same range completes once the fill verified.
            try rotStoredByte(glance, imageID: image.id, at: 1_000, of: bytes.enumerated().map { $0.offset == 1_000 ? $0.element ^ 0xFF : $0.element })
            let good = Task { try await other.exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice)]) }
            while depot.cache.runningFill(cloud: "default_RegionOne", imageID: image.id) == nil { try await Task.sleep(for: .milliseconds(10)) }
            let verified = try await client.exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice), ("Range", "bytes=\(20 << 20)-")])
            #expect(verified.error == nil && verified.status == 206)
            #expect(verified.body == Array(bytes[(20 << 20)...]))
            #expect(try await good.value.body == bytes)
        }
    }

    /// A far-ahead range's last byte is checked against the fill's own bytes, which outlive an
    /// eviction of the blob right after its commit (the soak's cache turns over every ~25 s, and
    /// 45 ranges lost their last byte when the check read the blob by name).
    @Test func theFarAheadCheckReadsTheFillsOwnBytesEvenWhenTheBlobWasEvictedAfterItsCommit() async throws {
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 503)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let depot = try await DepotHarness(glanceURL: glance.url)
        defer { Task { await depot.stop() } }
        let authorized = try await depot.cache.authorize(token: GlanceServer.alice, cloud: "default_RegionOne", imageID: image.id)
        let (fill, _) = try await depot.cache.fill(authorized)
        guard case let .committed(blob) = await fill.ended() else {
            Issue.record("the fill did not commit")
            return
        }
        #expect(try await depot.cache.evict(blob.digest) == UInt64(bytes.count))
        #expect(!FileManager.default.fileExists(atPath: depot.store.path(for: blob.digest)), "the blob is gone by name")
        let range: Range<UInt64> = 1_000_000..<UInt64(bytes.count - 1)
        let (digest, last) = try await depot.cache.hashRange(of: fill, range)
        #expect(digest == Digest.of(Array(bytes[1_000_000..<(bytes.count - 1)]), algorithm: .sha256))
        #expect(last == bytes[bytes.count - 1])
    }

    @Test func theScrubQuarantinesARottenBlobAndFetchesItAgainButReportsALostUpload() async throws {
        let bytes = pseudoRandomBytes(count: 2 << 20, seed: 504)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try await withDepot(glanceURL: glance.url, startPushes: false) { depot in
            let client = try await WireClient()
            let alice = [("X-Auth-Token", GlanceServer.alice)]
            _ = try await client.exchange("GET", "\(depot.url)/v2/images/\(image.id)/file", headers: alice)
            // An upload acknowledged and not yet pushed.
            let owed = try await glanceAsAlice(glance.url).createImage([
                "name": .string("owed"), "disk_format": .string("raw"), "container_format": .string("bare"),
            ])
            let upload = pseudoRandomBytes(count: 1 << 20, seed: 505)
            let put = try await spawn("/usr/bin/curl", [
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "X-Auth-Token: \(GlanceServer.alice)",
                "-H", "Content-Type: application/octet-stream", "--data-binary", "@-", "\(depot.url)/v2/images/\(owed.id)/file",
            ], stdin: upload)
            #expect(String(decoding: put.stdout, as: UTF8.self) == "204")

            let scrubber = Scrubber(cache: depot.cache, bytesPerSecond: 1 << 30, interval: .zero)
            _ = await scrubber.pass()
            #expect(depot.cache.integrity.snapshot["scrub_verified_blobs"] as? Int == 2, "both blobs verified")

            // Rot one byte of each blob on disk, keeping their sizes.
            for content in [bytes, upload] {
                let handle = try #require(FileHandle(forUpdatingAtPath: depot.store.path(for: Digest.of(content, algorithm: .sha256))))
                try handle.seek(toOffset: 4096)
                try handle.write(contentsOf: [content[4096] ^ 0x01])
                try handle.close()
            }
            _ = await scrubber.pass()
            let snapshot = depot.cache.integrity.snapshot
            #expect((snapshot["scrub_findings"] as? [String: Int])?["digest"] == 2)
            #expect((snapshot["quarantined_blobs"] as? [String: Int])?["digest"] == 2)
            #expect(snapshot["uploads_lost_to_damage"] as? Int == 1)
            #expect(depot.dir.files(under: "quarantine").count == 2)
            let push = try #require(try depot.catalog.push(cloud: "default_RegionOne", imageID: owed.id))
            #expect(push.state == .failed)
            #expect(push.lastError?.contains("damaged on disk") == true)
            let listed = try await curl("\(depot.url)/depot/v1/pushes", token: DepotHarness.adminToken)
            #expect(String(decoding: listed.body, as: UTF8.self).contains("damaged on disk"))
            // The cached image was fetched again, intact.
            let deadline = ContinuousClock.now + .seconds(30)
            while try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let hit = try await client.exchange("GET", "\(depot.url)/v2/images/\(image.id)/file", headers: alice)
            #expect(hit.header("x-depot-cache") == "hit" && hit.body == bytes)
            // What Depot shows of the lost upload is Glance's own state again.
            let record = try await client.exchange("GET", "\(depot.url)/v2/images/\(owed.id)", headers: alice)
            #expect(String(decoding: record.body, as: UTF8.self).contains("\"status\": \"queued\""))
        }
    }
}
