import BlobStore
import Cache
import DepotTestSupport
import Eviction
import Foundation
import Glance
import Synchronization
import Testing

/// The download path with a real Glance behind Depot and real clients in front.
@Suite(.serialized) struct DownloadPathTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// A download that has ended is a cached image, however large: the fill's last byte goes
    /// out only once its blob is named, synced, recorded and counted in the budget, so the
    /// Catalog, the store, the budget and the next request all agree at that moment. (Letting
    /// a large image's last byte go at the proof, before the SHA-256 name, was tried and
    /// withdrawn: eviction's accounting and order saw the image after its client did.)
    @Test func aLargeImageIsCachedTheMomentItsMissEnds() async throws {
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 1 << 30)
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let bytes = pseudoRandomBytes(count: 96 << 20 | 321, seed: 3)
            let sha256 = Digest.of(bytes, algorithm: .sha256)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"

            let body = depot.dir.path + "/client-body", head = depot.dir.path + "/client-head"
            let miss = try await spawn("/usr/bin/curl", ["-sS", "-o", body, "-D", head, "-w", "%{http_code}", "-H", "X-Auth-Token: \(GlanceServer.alice)", url])
            // Read the moment curl has ended, before the body is read and before any other
            // request: nothing may still be settling.
            let usage = depot.cache.budgetUsage
            let stored = depot.store.contains(sha256)
            let mapping = try depot.catalog.mapping(cloud: "default_RegionOne", imageID: image.id)
            #expect(miss.status == 0 && String(decoding: miss.stdout, as: UTF8.self) == "200")
            #expect(Digest.of(try [UInt8](Data(contentsOf: URL(fileURLWithPath: body))), algorithm: .sha256) == sha256)
            #expect(parseHeaderBlock(try String(contentsOfFile: head, encoding: .utf8))["x-depot-cache"] == "miss")
            try? FileManager.default.removeItem(atPath: body)
            #expect(mapping?.sha256 == sha256.hex && stored)
            #expect(usage?.used == UInt64(bytes.count) && usage?.reserved == 0)
            #expect(depot.dir.files(under: "tmp").isEmpty)
            let next = try await WireClient().exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice), ("Range", "bytes=-16")])
            #expect(next.status == 206 && next.body == Array(bytes.suffix(16)) && next.header("x-depot-cache") == "hit")
        }
    }

    @Test func curlGetsTheExactBytesOnAMissAndThenAHit() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let bytes = pseudoRandomBytes(count: 3 << 20 | 12345, seed: 1)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"

            let miss = try await curl(url)
            #expect(miss.status == 200)
            #expect(miss.body == bytes)
            #expect(miss.header("x-depot-cache") == "miss")
            #expect(miss.header("content-length") == String(bytes.count))
            #expect(miss.header("content-md5") == image.checksum)
            #expect(miss.header("accept-ranges") == "bytes")

            let hit = try await curl(url)
            #expect(hit.status == 200)
            #expect(hit.body == bytes)
            #expect(hit.header("x-depot-cache") == "hit")
            // The entity tag is the bytes' SHA-512 (Glance's os_hash_value), known on a miss as on a hit.
            #expect(hit.header("etag") == "\"\(Digest.of(bytes, algorithm: .sha512).hex)\"")
            #expect(miss.header("etag") == hit.header("etag"))
            #expect(depot.dir.files(under: "tmp").isEmpty)
            let mapping = try #require(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: image.id))
            #expect(mapping.sha256 == Digest.of(bytes, algorithm: .sha256).hex)
            #expect(try depot.catalog.blob(mapping.digest)?.sha512 == image.osHashValue)
        }
    }

    @Test func everyRangeFormMatchesGlanceColdAndWarm() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let bytes = pseudoRandomBytes(count: 10_000, seed: 2)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let path = "/v2/images/\(image.id)/file"
            for pass in ["cold", "warm"] {
                if pass == "cold" { #expect(try await depot.cache.resolve(AuthorizedImage.testing(image)) == nil) }
                for range in ["bytes=100-3999", "bytes=-3999", "bytes=6000-", "bytes=0-0", "bytes=9999-", "bytes=9000-20000"] {
                    let viaDepot = try await curl(depot.url + path, ["-H", "Range: \(range)"])
                    let direct = try await curl(glance.url + path, ["-H", "Range: \(range)"])
                    #expect(viaDepot.status == 206, "\(pass) \(range)")
                    #expect(viaDepot.status == direct.status, "\(pass) \(range)")
                    #expect(viaDepot.body == direct.body, "\(pass) \(range)")
                    #expect(viaDepot.header("content-range") == direct.header("content-range"), "\(pass) \(range)")
                    #expect(viaDepot.header("content-length") == direct.header("content-length"), "\(pass) \(range)")
                }
                for range in ["bytes=500-100", "bytes=10000-", "bytes=20000-20001"] {
                    let viaDepot = try await curl(depot.url + path, ["-H", "Range: \(range)"])
                    #expect(viaDepot.status == 416, "\(pass) \(range)")
                    #expect(viaDepot.header("content-range") == "bytes */10000", "\(pass) \(range)")
                }
                // Glance answers several ranges with 400; Depot answers them as RFC 9110 says.
                let multi = try await curl(depot.url + path, ["-H", "Range: bytes=0-9,20-29,-5"])
                #expect(multi.status == 206)
                let contentType = try #require(multi.header("content-type"))
                #expect(contentType.hasPrefix("multipart/byteranges; boundary="))
                let boundary = String(contentType.split(separator: "=").last!)
                let parts = multipartBodies(multi.body, boundary: boundary)
                #expect(parts.map(\.range) == ["bytes 0-9/10000", "bytes 20-29/10000", "bytes 9995-9999/10000"])
                #expect(parts.map(\.body) == [Array(bytes[0...9]), Array(bytes[20...29]), Array(bytes[9995...9999])])
                #expect(multi.header("content-length") == String(multi.body.count))
                // Let the cold pass's fill finish before the warm pass.
                for _ in 0..<200 where try await depot.cache.resolve(AuthorizedImage.testing(image)) == nil {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
        }
    }

    @Test func headEtagsAndConditionals() async throws {
        // Counts what Depot asks Glance for: a fill shows as a GET of the image's file.
        let backend = try FaultProxy(upstreamPort: glance.port)
        defer { backend.stop() }
        try await withDepot(glanceURL: backend.url) { depot in
            let bytes = pseudoRandomBytes(count: 50_000, seed: 3)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"

            let coldHead = try await curl(url, ["-I"])
            #expect(coldHead.status == 200)
            #expect(coldHead.header("content-length") == "50000")
            #expect(coldHead.body.count < 1000, "curl -I prints only the head")
            // A fill would have asked Glance for the file within milliseconds, and a 50 kB one
            // would have been committed long before this.
            try await Task.sleep(for: .milliseconds(1500))
            #expect(imageFetches(backend, image.id).isEmpty, "HEAD does not start a fill: \(backend.requests)")
            #expect(try depot.store.allDigests().isEmpty, "HEAD does not start a fill")
            #expect(depot.dir.files(under: "tmp").isEmpty)

            #expect(try await curl(url).header("x-depot-cache") == "miss")
            #expect(imageFetches(backend, image.id).count == 1, "the GET filled it, seen here: \(backend.requests)")
            let etag = "\"\(Digest.of(bytes, algorithm: .sha512).hex)\""
            let head = try await curl(url, ["-I"])
            #expect(head.status == 200)
            #expect(head.header("etag") == etag)
            #expect(head.header("content-length") == "50000")
            #expect(head.header("x-depot-cache") == "hit")

            #expect(try await curl(url, ["-H", "If-None-Match: \(etag)"]).status == 304)
            #expect(try await curl(url, ["-H", "If-None-Match: \"other\""]).status == 200)
            let ifRange = try await curl(url, ["-H", "Range: bytes=10-19", "-H", "If-Range: \(etag)"])
            #expect(ifRange.status == 206)
            #expect(ifRange.body == Array(bytes[10...19]))
            let stale = try await curl(url, ["-H", "Range: bytes=10-19", "-H", "If-Range: \"older\""])
            #expect(stale.status == 200)
            #expect(stale.body == bytes)
        }
    }

    @Test func anotherProjectCannotReadAPrivateImageEvenWhenCached() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let image = try await uploadImage(glanceAsAlice(glance.url), Array("alice only".utf8))
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            #expect(try await curl(url).body == Array("alice only".utf8))
            #expect(try await curl(url).header("x-depot-cache") == "hit")
            let asBob = try await curl(url, token: GlanceServer.bob)
            #expect(asBob.status == 404)
            #expect(asBob.body != Array("alice only".utf8))
            #expect(try await curl(url, token: nil).status == 401)
            #expect(try await curl(url, token: "garbage").status == 401)
            #expect(try await curl(url, token: GlanceServer.admin).status == 200, "admins read every project's images")
        }
    }

    @Test func aDeletedImageStopsBeingServed() async throws {
        var settings = CacheSettings()
        settings.decisionTTL = .milliseconds(300)
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let alice = glanceAsAlice(glance.url)
            // Deleted through Depot: forgotten at once.
            let first = try await uploadImage(alice, Array("first".utf8))
            #expect(try await curl("\(depot.url)/v2/images/\(first.id)/file").status == 200)
            let delete = try await curl("\(depot.url)/v2/images/\(first.id)", ["-X", "DELETE"])
            #expect(delete.status == 204)
            #expect(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: first.id) == nil)
            #expect(try await curl("\(depot.url)/v2/images/\(first.id)/file").status == 404)
            // Deleted behind Depot's back: refused once the decision expires.
            let second = try await uploadImage(alice, Array("second".utf8))
            #expect(try await curl("\(depot.url)/v2/images/\(second.id)/file").status == 200)
            try await alice.deleteImage(second.id)
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await curl("\(depot.url)/v2/images/\(second.id)/file").status == 404)
            // Deactivated: refused as Glance refuses it.
            let third = try await uploadImage(alice, Array("third".utf8))
            #expect(try await curl("\(depot.url)/v2/images/\(third.id)/file").status == 200)
            let admin = GlanceClient(configuration: .init(endpoint: depot.url, credentials: .token(GlanceServer.admin)))
            _ = try await admin.forward(method: "POST", pathAndQuery: "/v2/images/\(third.id)/actions/deactivate", headers: [("X-Auth-Token", GlanceServer.admin)], body: nil)
            #expect(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: third.id) == nil)
            #expect(try await curl("\(depot.url)/v2/images/\(third.id)/file").status == 403)
        }
    }

    /// An active image whose size Glance holds as null (its store could not tell it: a
    /// location whose server sent no Content-Length, `_set_image_size` in glance/location.py)
    /// cannot be served: Glance 33 fails its download with a 500, and Depot, which plans by
    /// the size, answered an empty 200. Depot refuses it with a JSON 502 on every path, cached
    /// before or not, and caches nothing.
    @Test func anActiveImageWithoutASizeIsRefusedNotAnsweredEmpty() async throws {
        var settings = CacheSettings()
        settings.decisionTTL = .milliseconds(300)
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let alice = glanceAsAlice(glance.url)
            let cached = try await uploadImage(alice, pseudoRandomBytes(count: 200_000, seed: 82))
            #expect(try await curl("\(depot.url)/v2/images/\(cached.id)/file").status == 200)
            try await waitUntil("the first image is cached") { try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: cached.id) != nil }
            let cold = try await uploadImage(alice, pseudoRandomBytes(count: 200_000, seed: 83))
            for id in [cached.id, cold.id] { try await forgetSize(glance, imageID: id) }
            #expect(try await alice.showImage(cold.id).size == nil)
            #expect(try await curl("\(glance.url)/v2/images/\(cold.id)/file").status == 500, "Glance's own answer")
            // The cached image's decision, made while it had a size, expires.
            try await Task.sleep(for: .milliseconds(400))
            for id in [cached.id, cold.id] {
                for extra in [[], ["-r", "0-99"], ["-I"]] {
                    let answer = try await curl("\(depot.url)/v2/images/\(id)/file", extra)
                    #expect(answer.status == 502, "\(id) \(extra): \(answer.status), \(answer.body.count) bytes")
                    if extra != ["-I"] { #expect(errorMessage(answer).contains("has no size in the image service")) }
                }
                let vio = try await curl("\(depot.url)\(MulticloudVIOTests.vio)/projA/images/file/\(id)")
                #expect(vio.status == 502 && errorMessage(vio).contains("has no size"))
            }
            #expect(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: cold.id) == nil)
            #expect(try depot.cache.runningFill(cloud: "default_RegionOne", imageID: cold.id) == nil)
        }
    }

    /// Sets an image's size to null in Glance's own database, as Glance records an image whose
    /// store could not tell its size.
    func forgetSize(_ glance: GlanceServer, imageID: String) async throws {
        let script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); c.execute('update images set size = NULL where id = ?', (sys.argv[2],)); c.commit()"
        let run = try await spawn("/usr/bin/python3", ["-c", script, glance.dataDirectory + "/glance.sqlite", imageID])
        #expect(run.status == 0, "python3 updated Glance's database")
    }

    /// A decision in use is asked for again before it expires, in the background: the readers
    /// of a hot image never all wait on Glance when it expires (the p99 spikes of
    /// `benchmarks/serve`, one repetition in five, were every connection asking Glance at once).
    /// Decisions age on a clock the test moves on; Glance's answers to the image's record are
    /// held while a hit is asked for, so a hit that waited on Glance would not come back.
    @Test func aDecisionInUseIsRenewedBeforeItExpiresSoNoReaderWaitsOnGlance() async throws {
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        let skew = Mutex(Duration.zero)
        var settings = CacheSettings.testing
        settings.decisionTTL = .seconds(600)
        settings.decisionClock = DecisionClock { ContinuousClock.now + skew.withLock { $0 } }
        try await withDepot(glanceURL: proxy.url, settings: settings) { depot in
            let image = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 100_000, seed: 70))
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let recordPath = "/v2/images/\(image.id)"
            #expect(try await curl(url).status == 200)
            #expect(try await curl(url).header("x-depot-cache") == "hit")
            // What hits derive from the record is kept with the decision, and only with it.
            func known() -> KnownHit? {
                depot.cache.knownHit(token: GlanceServer.alice, fingerprint: SecretFingerprint(GlanceServer.alice), cloud: "default_RegionOne", imageID: image.id)
            }
            func decisionMemo() -> DecisionMemo? { known()?.derived }
            let firstMemo = try #require(decisionMemo())
            #expect(decisionMemo() === firstMemo, "one decision, one memo")
            func waitForHeld(_ count: Int) async throws {
                let deadline = ContinuousClock.now + .seconds(60)
                while proxy.heldResponses != count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            }
            // Past three quarters of the TTL (450 s): the hit is answered at once, and Glance is
            // asked again meanwhile.
            skew.withLock { $0 = .seconds(500) }
            proxy.setFaults { $0.holdResponsesTo = { $0.method == "GET" && $0.path == recordPath } }
            let early = try await curl(url, ["--max-time", "60"])
            #expect(early.status == 200 && early.header("x-depot-cache") == "hit")
            try await waitForHeld(1)
            #expect(proxy.heldResponses == 1, "the decision is asked for again while it still serves")
            proxy.setFaults { $0.holdResponsesTo = nil }
            try await waitForHeld(0)
            // Glance's answer reached Depot; the renewed decision is recorded right after, on a
            // task of its own: waited for. Only a decision not yet due for renewal has a
            // validity, and the first one is due at 500 s.
            try await waitUntil("the decision was renewed", timeout: .seconds(30)) { known()?.validity != nil }
            // Past the first decision's expiry (600 s): the renewed one serves, without Glance.
            skew.withLock { $0 = .seconds(700) }
            proxy.setFaults { $0.holdResponsesTo = { $0.method == "GET" && $0.path == recordPath } }
            let late = try await curl(url, ["--max-time", "60"])
            #expect(late.status == 200 && late.header("x-depot-cache") == "hit")
            #expect(proxy.heldResponses == 0, "no request waited on Glance")
            #expect(try #require(decisionMemo()) !== firstMemo, "the renewed decision does not keep what was derived from the first one's record")
            proxy.setFaults { $0.holdResponsesTo = nil }
        }
    }

    /// Requests that need the same decision at once share one request to Glance: a segmented
    /// download's connections, or a hot image's readers once its decision expired. Glance's
    /// answer to the image's record is held until all of them arrived.
    @Test func requestsNeedingOneDecisionAtOnceAskGlanceOnce() async throws {
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        try await withDepot(glanceURL: proxy.url) { depot in
            let bytes = pseudoRandomBytes(count: 1 << 20, seed: 71)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let recordPath = "/v2/images/\(image.id)"
            #expect(try await curl(url).status == 200)
            // A token of the same project that no request used yet.
            let reader = "erin\(UInt32.random(in: 0...UInt32.max)):projA:member,reader"
            proxy.resetCounters()
            proxy.setFaults { $0.holdResponsesTo = { $0.method == "GET" && $0.path == recordPath } }
            let segments = 16, segment = bytes.count / segments
            let answers = Task {
                try await withThrowingTaskGroup(of: (Int, CurlResult).self) { group in
                    for index in 0..<segments {
                        group.addTask {
                            let range = "\(index * segment)-\((index + 1) * segment - 1)"
                            return (index, try await curl(url, token: reader, ["-H", "Range: bytes=" + range, "--max-time", "60"]))
                        }
                    }
                    return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
                }
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while proxy.heldResponses == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            // Time for every request to reach Depot (and, without sharing, Glance).
            try await Task.sleep(for: .seconds(2))
            let asked = proxy.requests("GET", path: recordPath).count
            proxy.setFaults { $0.holdResponsesTo = nil }
            let results = try await answers.value
            #expect(asked == 1, "requests to Glance for the image's record: \(asked)")
            for index in 0..<segments {
                let result = results[index]
                #expect(result?.status == 206 && result?.body == Array(bytes[index * segment..<(index + 1) * segment]), "segment \(index): \(result?.status ?? 0)")
            }
        }
    }

    @Test func badInputGetsClearErrors() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let notFound = try await curl("\(depot.url)/v2/images/00000000-0000-0000-0000-000000000000/file")
            #expect(notFound.status == 404)
            // Decoded, as Glance routes it, the path has dot segments: refused as such.
            let odd = try await curl("\(depot.url)/v2/images/..%2F..%2Fetc%2Fpasswd/file")
            #expect(odd.status == 400)
            let json = try JSONSerialization.jsonObject(with: Data(odd.body)) as? [String: Any]
            #expect((json?["error"] as? [String: Any])?["code"] as? Int == 400)
            #expect(try await curl("\(depot.url)/nowhere").status == 404)
            #expect(try await curl("\(depot.url)/v2/images?" + String(repeating: "a", count: 9000)).status == 414)
            #expect(try await curl("\(depot.url)/v2/images", ["-H", "X-Big: " + String(repeating: "b", count: 70_000)]).status == 431)
            // An image with no data yet: Glance answers 204.
            let queued = try await glanceAsAlice(glance.url).createImage(["name": .string("empty"), "disk_format": .string("raw"), "container_format": .string("bare")])
            #expect(try await curl("\(depot.url)/v2/images/\(queued.id)/file").status == 204)
        }
    }

    @Test func healthAndReadiness() async throws {
        try await withDepot(glanceURL: glance.url, clouds: ["edge_R2": "http://127.0.0.1:9"]) { depot in
            #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)
            let ready = try await curl("\(depot.url)/readyz", token: nil)
            #expect(ready.status == 200)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(ready.body)) as? [String: Any])
            #expect(report["store"] as? String == "writable")
            #expect(report["catalog"] as? String == "open")
            let clouds = try #require(report["clouds"] as? [String: String])
            #expect(clouds["default_RegionOne"] == "reachable")
            #expect(clouds["edge_R2"]?.hasPrefix("unreachable") == true, "a backend outage is reported, not fatal")
            #expect(depot.dir.files(under: "tmp").isEmpty, "the write probe cleans up")
        }
    }

    @Test func everythingElseIsForwardedUnchanged() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let created = try await curl("\(depot.url)/v2/images", [
                "-X", "POST", "-H", "Content-Type: application/json",
                "--data", "{\"name\": \"via-depot\", \"disk_format\": \"raw\", \"container_format\": \"bare\"}",
            ])
            #expect(created.status == 201)
            let id = try #require((try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: Any])?["id"] as? String)
            let shown = try await curl("\(depot.url)/v2/images/\(id)")
            #expect(shown.status == 200)
            let direct = try await curl("\(glance.url)/v2/images/\(id)")
            #expect(shown.body == direct.body)
            let versions = try await curl("\(depot.url)/versions", token: nil)
            #expect(versions.status == 200)
            #expect(String(decoding: versions.body, as: UTF8.self).contains("\(depot.url)/v2/"))
            let root = try await curl("\(depot.url)/", token: nil)
            #expect(root.status == 300)
            #expect(try await curl("\(depot.url)/v2/images/\(id)", token: GlanceServer.bob).status == 404)
        }
    }
}

extension AuthorizedImage {
    static func testing(_ image: GlanceImage) -> AuthorizedImage {
        AuthorizedImage(cloud: "default_RegionOne", image: image, fromOfflineGrace: false)
    }
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
func multipartBodies(_ body: [UInt8], boundary: String) -> [(range: String, body: [UInt8])] {
    let delimiter = Array("\r\n--\(boundary)".utf8)
    var parts: [(String, [UInt8])] = []
    var starts: [Int] = []
    var index = 0
    while index + delimiter.count <= body.count {
        if Array(body[index..<index + delimiter.count]) == delimiter { starts.append(index) }
        index += 1
    }
    for (n, start) in starts.enumerated().dropLast() {
        let chunk = Array(body[(start + delimiter.count)..<starts[n + 1]])
        let separator = Array("\r\n\r\n".utf8)
        guard let headerEnd = (0...(chunk.count - 4)).first(where: { Array(chunk[$0..<$0 + 4]) == separator }) else { continue }
        let headers = String(decoding: chunk[..<headerEnd], as: UTF8.self)
        let range = headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-range:") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)) } ?? ""
        parts.append((range, Array(chunk[(headerEnd + 4)...])))
    }
    return parts
}
