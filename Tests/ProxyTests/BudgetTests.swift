import BlobStore
import Cache
import DepotTestSupport
import Eviction
import Foundation
import Glance
import Testing

/// The cache budget in the running server, with a real Glance behind it.
@Suite(.serialized) struct BudgetTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func leastRecentlyUsedImagesMakeRoomAndTooLargeImagesAreStreamedWithoutACopy() async throws {
        let mib = 1 << 20
        let alice = glanceAsAlice(glance.url)
        var images: [(GlanceImage, [UInt8])] = []
        for n in 0..<4 {
            let bytes = pseudoRandomBytes(count: 3 * mib, seed: UInt64(300 + n))
            images.append((try await uploadImage(alice, bytes), bytes))
        }
        var settings = CacheSettings()
        settings.budget = Watermarks(budget: UInt64(10 * mib))   // high 9.5 MiB, low 8.5 MiB
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let disk = DiskUsageSampler(depot.dir.path)
            func get(_ n: Int) async throws -> CurlResult { try await curl("\(depot.url)/v2/images/\(images[n].0.id)/file") }
            func cached(_ n: Int) -> Bool { depot.store.contains(Digest.of(images[n].1, algorithm: .sha256)) }

            for n in 0..<3 { #expect(try await get(n).body == images[n].1) }
            #expect(try await get(0).header("x-depot-cache") == "hit")   // image 0 is now the most recent
            // Image 3 crosses the high mark: the two least recently used (1, then 2) go.
            #expect(try await get(3).body == images[3].1)
            #expect(cached(0) && cached(3))
            #expect(!cached(1) && !cached(2))
            #expect(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: images[1].0.id) == nil)
            #expect(dataDirectoryUsage(depot.dir.path).bytes == UInt64(6 * mib), "blobs/ holds images 0 and 3")
            let usage = try #require(depot.cache.budgetUsage)
            #expect(usage.used == UInt64(6 * mib) && usage.reserved == 0)
            // An evicted image is simply a miss again.
            let again = try await get(1)
            #expect(again.header("x-depot-cache") == "miss")
            #expect(again.body == images[1].1)

            // An image larger than the budget is streamed from the backend, whole and in ranges,
            // and nothing of it is kept.
            let hugeBytes = pseudoRandomBytes(count: 11 * mib, seed: 399)
            let huge = try await uploadImage(alice, hugeBytes)
            let bypassed = try await curl("\(depot.url)/v2/images/\(huge.id)/file")
            #expect(bypassed.status == 200)
            #expect(bypassed.header("x-depot-cache") == "bypass")
            #expect(bypassed.body == hugeBytes)
            let range = try await curl("\(depot.url)/v2/images/\(huge.id)/file", ["-H", "Range: bytes=100-3999"])
            #expect(range.status == 206 && range.body == Array(hugeBytes[100...3999]))
            let parts = try await curl("\(depot.url)/v2/images/\(huge.id)/file", ["-H", "Range: bytes=0-9,5000000-5000099"])
            #expect(parts.status == 206)
            #expect(parts.body.firstRange(of: hugeBytes[5_000_000...5_000_099]) != nil)
            #expect(!depot.store.contains(Digest.of(hugeBytes, algorithm: .sha256)))
            #expect(depot.dir.files(under: "tmp").isEmpty)
            #expect(dataDirectoryUsage(depot.dir.path).bytes <= UInt64(10 * mib))
            #expect(depot.cache.budgetUsage!.used + depot.cache.budgetUsage!.reserved <= UInt64(10 * mib))
            // Counted when the handler finishes, which may be just after curl has the last byte.
            func bypassCount() -> Int? { depot.cache.statistics.snapshot["bypassed"] as? Int }
            for _ in 0..<200 where bypassCount() != 3 { try await Task.sleep(for: .milliseconds(50)) }
            #expect(bypassCount() == 3)
            let (peak, samples) = await disk.stop()
            #expect(samples > 10)
            #expect(peak.bytes <= UInt64(10 * mib), "blobs/ and tmp/ held \(peak.bytes) bytes at most")
        }
    }

    @Test func bytesStreamedWithoutACopyThatDoNotMatchGlancesHashNeverLookComplete() async throws {
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 398)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try rotStoredByte(glance, imageID: image.id, at: 2_000_000, of: bytes)

        var settings = CacheSettings()
        settings.budget = Watermarks(budget: 1 << 20)
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let result = try await spawn("/usr/bin/curl", [
                "-s", "-o", "/dev/null", "-D", "-", "-w", "\\n%{http_code} %{size_download}", "-H", "X-Auth-Token: \(GlanceServer.alice)",
                "\(depot.url)/v2/images/\(image.id)/file",
            ])
            let output = String(decoding: result.stdout, as: UTF8.self)
            let fields = output.split(whereSeparator: \.isNewline).last?.split(separator: " ") ?? []
            #expect(output.lowercased().contains("x-depot-cache: bypass"), "streamed without a copy: \(output)")
            #expect(result.status == 18, "curl reports a partial transfer (exit \(result.status))")
            #expect(fields.first == "200")
            #expect(fields.count == 2 && Int(fields[1])! < bytes.count, "the client never received the whole wrong image: \(fields)")
            #expect(try depot.store.allDigests().isEmpty, "nothing was kept")
            #expect(depot.dir.files(under: "tmp").isEmpty)
        }
    }

    @Test func coldFillsTakeAtMostHalfTheBudgetTogetherAndTheRestIsStreamedWithoutACopy() async throws {
        let mib = 1 << 20
        let alice = glanceAsAlice(glance.url)
        let hot = pseudoRandomBytes(count: 2 * mib, seed: 310), slow = pseudoRandomBytes(count: 4 * mib, seed: 311)
        let other = pseudoRandomBytes(count: 2 * mib, seed: 312)
        let hotImage = try await uploadImage(alice, hot), slowImage = try await uploadImage(alice, slow)
        let otherImage = try await uploadImage(alice, other)
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        var settings = CacheSettings()
        settings.budget = Watermarks(budget: UInt64(10 * mib))
        try await withDepot(glanceURL: proxy.url, settings: settings) { depot in
            func url(_ image: GlanceImage) -> String { "\(depot.url)/v2/images/\(image.id)/file" }
            #expect(try await curl(url(hotImage)).body == hot)

            // A 4 MiB fill holds 40% of the budget; 2 MiB more would make 60%. Glance's answer to
            // the fill is held until the second image has been answered: the fill runs as long
            // as the test needs, however slow the machine (a throttled one once ended first).
            let slowID = slowImage.id
            proxy.setFaults { $0.holdResponsesTo = { isImageFetch($0, slowID) } }
            async let slowDownload = curl(url(slowImage))
            try await waitUntil("the slow fill runs, its answer held") {
                depot.cache.runningFill(cloud: "default_RegionOne", imageID: slowImage.id) != nil && proxy.heldResponses == 1
            }
            try #require(depot.cache.runningFill(cloud: "default_RegionOne", imageID: slowImage.id) != nil, "the slow fill is running")
            let streamed = try await curl(url(otherImage))
            #expect(streamed.status == 200 && streamed.body == other)
            #expect(streamed.header("x-depot-cache") == "bypass", "the second cold image was streamed, not filled")
            proxy.setFaults { $0.holdResponsesTo = nil }
            #expect(try await slowDownload.body == slow)
            #expect(try await curl(url(hotImage)).header("x-depot-cache") == "hit", "the hot image stayed")
            #expect(try await curl(url(slowImage)).header("x-depot-cache") == "hit")
            // With no fill running, the same image is filled as usual.
            #expect(try await curl(url(otherImage)).header("x-depot-cache") == "miss")
        }
    }

    /// The kind: a request for an image already being filled joins that fill, whatever the
    /// budget says. Eight clients on one cold image in an empty budget of three times its size:
    /// none is refused by the fill-share rule (a second reservation of the same image would
    /// break it) and streamed without a copy, and the backend sends the image once.
    @Test func clientsStartingTogetherOnAColdImageShareOneFillInAnEmptyBudget() async throws {
        let mib = 1 << 20
        let bytes = pseudoRandomBytes(count: 32 * mib, seed: 330)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        var settings = CacheSettings()
        settings.budget = Watermarks(budget: UInt64(96 * mib))
        let depot = try await DepotHarness(glanceURL: proxy.url, settings: settings)
        defer { Task { await depot.stop() } }
        proxy.resetCounters()
        // Glance's answers to the clients' authorization (one for all eight: they share the
        // token) are held at the proxy and handed over once every client waits on it, so all
        // eight reach the cache together; the fill then runs over a slow link.
        proxy.setFaults {
            $0.holdResponses = true
            $0.bytesPerSecond = 16 * mib
        }
        async let results = withThrowingTaskGroup(of: CurlResult.self) { group in
            for _ in 0..<8 { group.addTask { try await curl("\(depot.url)/v2/images/\(image.id)/file") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        // Two answers: the image's record and the one-byte download check.
        for _ in 0..<3000 where proxy.heldResponses < 2 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(proxy.heldResponses >= 2, "the clients' authorization was answered")
        // Every client connected, and time for their requests to join the decision.
        for _ in 0..<3000 where depot.server.openConnections < 8 { try await Task.sleep(for: .milliseconds(10)) }
        try #require(depot.server.openConnections >= 8, "every client connected")
        try await Task.sleep(for: .seconds(1))
        proxy.setFaults { $0.holdResponses = false }
        let answers = try await results
        #expect(answers.allSatisfy { $0.status == 200 && $0.body == bytes })
        let sources = answers.map { $0.header("x-depot-cache") ?? "none" }
        #expect(!sources.contains("bypass"), "a client was streamed without a copy: \(sources)")
        #expect(sources.filter { $0 == "miss" }.count == 1 && sources.filter { $0 == "shared" }.count == 7, "\(sources)")
        #expect(imageFetches(proxy, image.id).count == 1, "the backend was asked for the image once: \(proxy.requests)")
        #expect(proxy.bytesFromServer < bytes.count + mib, "the backend sent \(proxy.bytesFromServer) bytes for a \(bytes.count)-byte image")
    }

    /// A crash between a blob's file and its row (an upload published but not recorded) leaves
    /// a file no row names; the next start counts it in the budget instead of leaving it to fsck.
    @Test func aBlobFileWithoutARowIsAdoptedAtStart() async throws {
        let dir = TemporaryDirectory("depot-orphan")
        let bytes = pseudoRandomBytes(count: 1 << 20, seed: 320)
        let orphan: Digest
        do {
            let store = try BlobStore(dataDirectory: dir.path)
            let writer = try store.makeWriter()
            try writer.write(bytes)
            orphan = try writer.commit().digest
        }
        var settings = CacheSettings()
        settings.budget = Watermarks(budget: UInt64(10 << 20))
        try await withDepot(glanceURL: glance.url, settings: settings, directory: dir) { depot in
            #expect(try depot.catalog.blob(orphan)?.size == Int64(bytes.count))
            #expect(depot.cache.budgetUsage?.used == UInt64(bytes.count))
            let completed = try await depot.cache.uploads.completeDigests(orphan)
            #expect(completed.sha512 == Digest.of(bytes, algorithm: .sha512).hex)
        }
    }

    @Test func theRecencyOrderSurvivesARestart() async throws {
        let mib = 1 << 20
        let alice = glanceAsAlice(glance.url)
        var images: [(GlanceImage, [UInt8])] = []
        for n in 0..<3 {
            let bytes = pseudoRandomBytes(count: 3 * mib, seed: UInt64(400 + n))
            images.append((try await uploadImage(alice, bytes), bytes))
        }
        var settings = CacheSettings()
        settings.budget = Watermarks(budget: UInt64(8 * mib))
        let depot = try await DepotHarness(glanceURL: glance.url, settings: settings)
        for n in [0, 1] { _ = try await curl("\(depot.url)/v2/images/\(images[n].0.id)/file") }
        try await Task.sleep(for: .milliseconds(50))
        _ = try await curl("\(depot.url)/v2/images/\(images[0].0.id)/file")   // 0 is newer than 1 now
        depot.cache.flushHits()
        await depot.stop()
        // Same data directory, a new process's view: image 2 must evict 1, not 0.
        let cache = try ImageCache(store: depot.store, catalog: depot.catalog, clouds: depot.cache.clouds, defaultCloud: "default_RegionOne", settings: settings)
        let authorized = try await cache.authorize(token: GlanceServer.alice, cloud: "default_RegionOne", imageID: images[2].0.id)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The cache's fills run in its background work, as in `depot serve`'s service group.
            group.addTask { await cache.background.run() }
            let (fill, _) = try await cache.fill(authorized)
            while fill.outcome == nil { try await Task.sleep(for: .milliseconds(20)) }
            group.cancelAll()
        }
        #expect(depot.store.contains(Digest.of(images[0].1, algorithm: .sha256)))
        #expect(!depot.store.contains(Digest.of(images[1].1, algorithm: .sha256)))
        #expect(depot.store.contains(Digest.of(images[2].1, algorithm: .sha256)))
    }
}
