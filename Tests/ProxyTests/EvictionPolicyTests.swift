import BlobStore
import Cache
import DepotTestSupport
import Eviction
import Foundation
import Glance
import Synchronization
import Testing

/// The eviction engine in the running server, against a real Glance.
@Suite(.serialized) struct EvictionPolicyTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// Images of `megabytes` each, uploaded straight to Glance.
    func images(_ count: Int, megabytes: Int, seed: UInt64) async throws -> [(image: GlanceImage, digest: Digest)] {
        var result: [(GlanceImage, Digest)] = []
        for n in 0..<count {
            let bytes = pseudoRandomBytes(count: megabytes << 20, seed: seed + UInt64(n))
            result.append((try await uploadImage(glanceAsAlice(glance.url), bytes), Digest.of(bytes, algorithm: .sha256)))
        }
        return result
    }

    @Test func aGiBBudgetWithTenImagesOf150MiBEvictsExactlyTheLeastRecentlyUsed() async throws {
        let images = try await images(10, megabytes: 150, seed: 900)
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 1 << 30)   // high 972.8 MiB, low 870.4 MiB
        let depot = try await DepotHarness(glanceURL: glance.url, settings: settings)
        defer { Task { await depot.stop() } }
        func get(_ n: Int) async throws {
            let result = try await download("\(depot.url)/v2/images/\(images[n].image.id)/file")
            #expect(result.status == 200)
            #expect(result.sha256 == images[n].digest.hex, "image \(n)")
        }
        func cached() -> [Int] { (0..<10).filter { depot.store.contains(images[$0].digest) } }

        // 0..5 fill 900 MiB; 6 would cross 972.8: down to 870.4 frees 0 and 1 (the two oldest).
        for n in 0..<6 { try await get(n) }
        #expect(cached() == [0, 1, 2, 3, 4, 5])
        try await get(2)   // 2 becomes the most recent
        try await get(6)
        #expect(cached() == [2, 3, 4, 5, 6])
        // Now 3 is the oldest, then 4: image 7 needs 750 + 150 = 900 ≤ 972.8, no eviction;
        // image 8 crosses: 1050 → 870.4 frees 3 and 4.
        try await get(7)
        #expect(cached() == [2, 3, 4, 5, 6, 7])
        try await get(3)   // 4 is now the oldest, then 5
        try await get(8)
        #expect(cached() == [2, 3, 6, 7, 8])
        let usage = try #require(depot.cache.budgetUsage)
        #expect(usage.used == 5 * 150 << 20)
        #expect(usage.used + usage.reserved <= 1 << 30)
    }

    @Test func aPinnedImageSurvivesAnyPressureAndAnOpenDownloadIsNotRemoved() async throws {
        let images = try await images(5, megabytes: 4, seed: 950)
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 16 << 20)   // high 15.2 MiB, low 13.6 MiB
        let depot = try await DepotHarness(glanceURL: glance.url, settings: settings)
        defer { Task { await depot.stop() } }
        let admin = ["-H", "X-Auth-Token: \(DepotHarness.adminToken)"]
        #expect(try await download("\(depot.url)/v2/images/\(images[0].image.id)/file").status == 200)
        let pin = try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(images[0].image.id)/pin", token: nil, ["-X", "PUT"] + admin)
        #expect(pin.status == 200)
        // Non-admins cannot pin.
        #expect(try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(images[0].image.id)/pin", ["-X", "PUT"]).status == 403)

        // A reader holds image 1 open while others push it out of the budget.
        #expect(try await download("\(depot.url)/v2/images/\(images[1].image.id)/file").status == 200)
        let reader = try depot.store.open(images[1].digest)
        depot.cache.beginRead(images[1].digest)
        for n in 2..<5 {
            #expect(try await download("\(depot.url)/v2/images/\(images[n].image.id)/file").status == 200)
        }
        #expect(depot.store.contains(images[0].digest), "pinned")
        #expect(depot.store.contains(images[1].digest), "being read")
        #expect(try reader.read(0..<16) == Array(pseudoRandomBytes(count: 4 << 20, seed: 951).prefix(16)))
        depot.cache.endRead(images[1].digest)

        // Unpinned and unread, both may go again: Glance's cache-clear empties the cache.
        #expect(try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(images[0].image.id)/pin", token: nil, ["-X", "DELETE"] + admin).status == 200)
        #expect(try await curl("\(depot.url)/v2/cache", token: nil, ["-X", "DELETE"] + admin).status == 204)
        #expect(try depot.store.allDigests().isEmpty)
        #expect(depot.cache.budgetUsage?.used == 0)
    }

    @Test func usedBytesNeverExceedTheBudgetUnder32Clients() async throws {
        let images = try await images(12, megabytes: 6, seed: 970)
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 40 << 20)
        let depot = try await DepotHarness(glanceURL: glance.url, settings: settings)
        defer { Task { await depot.stop() } }
        let worst = Atomic<UInt64>(0)
        let samples = Atomic<Int>(0)
        let running = Atomic<Bool>(true)
        let stopped = Atomic<Bool>(false)
        // A thread of its own: the cooperative pool is busy with 32 clients.
        Thread.detachNewThread {
            while running.load(ordering: .relaxed) {
                if let usage = depot.cache.budgetUsage {
                    let total = usage.used + usage.reserved
                    if total > worst.load(ordering: .relaxed) { worst.store(total, ordering: .relaxed) }
                    samples.add(1, ordering: .relaxed)
                }
                usleep(1000)
            }
            stopped.store(true, ordering: .releasing)
        }
        let failures = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<32 {
                group.addTask {
                    var generator = SeededGenerator(seed: UInt64(client))
                    var failed: [String] = []
                    for _ in 0..<6 {
                        let n = Int.random(in: 0..<images.count, using: &generator)
                        let result = try await download("\(depot.url)/v2/images/\(images[n].image.id)/file")
                        // With everything left being read, the image is streamed without a copy.
                        if result.status != 200 || result.sha256 != images[n].digest.hex {
                            failed.append("client \(client) image \(n): \(result.status)")
                        }
                    }
                    return failed
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        running.store(false, ordering: .relaxed)
        while !stopped.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(failures.isEmpty, "\(failures)")
        #expect(samples.load(ordering: .relaxed) > 100)
        #expect(worst.load(ordering: .relaxed) <= 40 << 20, "peak \(worst.load(ordering: .relaxed))")
        #expect(depot.dir.files(under: "tmp").isEmpty)
    }
}

/// A small deterministic generator, so a failing workload can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
