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
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let disk = DiskUsageSampler(depot.dir.path)
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
            let (peak, samples) = await disk.stop()
            #expect(samples > 10)
            #expect(peak.bytes <= 1 << 30, "blobs/ and tmp/ held \(peak.bytes) bytes")
            #expect(dataDirectoryUsage(depot.dir.path).bytes == 5 * 150 << 20)
            let usage = try #require(depot.cache.budgetUsage)
            #expect(usage.used == 5 * 150 << 20)
            #expect(usage.used + usage.reserved <= 1 << 30)
        }
    }

    @Test func aPinnedImageSurvivesAnyPressureAndAnOpenDownloadIsNotRemoved() async throws {
        // Larger than Depot's send buffer and the reader's receive window together (4 MiB and
        // 16 KiB here): a paused reader keeps Depot's response, and its read of the blob, open.
        let sendBufferMax = try String(contentsOfFile: "/proc/sys/net/ipv4/tcp_wmem", encoding: .utf8).split(whereSeparator: \.isWhitespace).last.flatMap { Int($0) }
        try #require(sendBufferMax.map { $0 <= 8 << 20 } == true, "net.ipv4.tcp_wmem allows a \(sendBufferMax ?? 0)-byte send buffer: a 12 MiB download would not stay open")
        let pinned = try await images(1, megabytes: 4, seed: 950)[0]
        let readBytes = pseudoRandomBytes(count: 12 << 20, seed: 951)
        let read = (image: try await uploadImage(glanceAsAlice(glance.url), readBytes), digest: Digest.of(readBytes, algorithm: .sha256))
        let others = try await images(3, megabytes: 6, seed: 952)
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 32 << 20)   // high 30.4 MiB, low 27.2 MiB
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let admin = ["-H", "X-Auth-Token: \(DepotHarness.adminToken)"]
            #expect(try await download("\(depot.url)/v2/images/\(pinned.image.id)/file").status == 200)
            let pin = try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(pinned.image.id)/pin", token: nil, ["-X", "PUT"] + admin)
            #expect(pin.status == 200)
            // Non-admins cannot pin.
            #expect(try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(pinned.image.id)/pin", ["-X", "PUT"]).status == 403)

            // A real client downloads the 12 MiB image from the cache and stops reading after the
            // first 64 KiB, while three 6 MiB images cross the high mark (28 + 6 > 30.4 MiB).
            // Least recently used first, the 12 MiB blob would free enough alone; as it is being
            // read, the two 6 MiB images before the last go instead.
            #expect(try await download("\(depot.url)/v2/images/\(read.image.id)/file").status == 200)
            let reader = try await PausedDownload.start(port: depot.port, path: "/v2/images/\(read.image.id)/file", token: GlanceServer.alice, first: 64 << 10)
            #expect(reader.head.hasPrefix("HTTP/1.1 200"), "\(reader.head)")
            #expect(reader.head.lowercased().contains("x-depot-cache: hit"), "\(reader.head)")
            for other in others {
                #expect(try await download("\(depot.url)/v2/images/\(other.image.id)/file").status == 200)
            }
            let blobFile = depot.store.path(for: read.digest)
            #expect(FileManager.default.fileExists(atPath: blobFile), "the blob being read is still on disk")
            #expect(FileManager.default.fileExists(atPath: depot.store.path(for: pinned.digest)), "pinned")
            #expect(!depot.store.contains(others[0].digest) && !depot.store.contains(others[1].digest), "the others made room")
            #expect(depot.store.contains(others[2].digest))
            let body = try await reader.finish()
            #expect(body == readBytes, "the paused download ends whole")

            // Unpinned and unread, both may go again: Glance's cache-clear empties the cache.
            #expect(try await curl("\(depot.url)/depot/v1/images/default_RegionOne/\(pinned.image.id)/pin", token: nil, ["-X", "DELETE"] + admin).status == 200)
            #expect(try await curl("\(depot.url)/v2/cache", token: nil, ["-X", "DELETE"] + admin).status == 204)
            #expect(try depot.store.allDigests().isEmpty)
            #expect(dataDirectoryUsage(depot.dir.path).files == 0)
            #expect(depot.cache.budgetUsage?.used == 0)
        }
    }

    @Test func usedBytesNeverExceedTheBudgetUnder32Clients() async throws {
        let images = try await images(12, megabytes: 6, seed: 970)
        var settings = CacheSettings.testing
        settings.budget = Watermarks(budget: 40 << 20)
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            // The judge: the files themselves. Depot's own counter is sampled too, for the report.
            let disk = DiskUsageSampler(depot.dir.path)
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
            let (peak, diskSamples) = await disk.stop()
            while !stopped.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
            print("32 clients, 40 MiB budget: peak on disk \(peak.bytes) bytes (\(peak.allocated) allocated) in \(diskSamples) samples; Depot's counter peaked at \(worst.load(ordering: .relaxed))")
            #expect(failures.isEmpty, "\(failures)")
            #expect(diskSamples > 100)
            #expect(peak.bytes <= 40 << 20, "blobs/ and tmp/ held \(peak.bytes) bytes")
            #expect(peak.bytes > 30 << 20, "the workload filled the budget (peak \(peak.bytes)), or this proves nothing")
            #expect(samples.load(ordering: .relaxed) > 100)
            #expect(worst.load(ordering: .relaxed) <= 40 << 20, "peak \(worst.load(ordering: .relaxed))")
            #expect(depot.dir.files(under: "tmp").isEmpty)
        }
    }
}

/// A GET on a raw socket with a small receive window that reads the head and the first bytes,
/// then stops reading until `finish`: a real client pausing mid-download.
final class PausedDownload: Sendable {
    let fd: Int32
    let head: String
    let bodyStart: [UInt8]
    let length: Int

    private init(fd: Int32, head: String, bodyStart: [UInt8], length: Int) {
        self.fd = fd
        self.head = head
        self.bodyStart = bodyStart
        self.length = length
    }

    /// Sends the request and reads until the head and `first` body bytes have arrived.
    static func start(port: Int, path: String, token: String, first: Int) async throws -> PausedDownload {
        try await offThePool {
            // Depot's send buffer grows to 4 MiB at most; this end takes 16 KiB at a time.
            let fd = try connectLoopback(port: port, receiveBuffer: 16 << 10)
            sendAll(fd, Array("GET \(path) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(token)\r\n\r\n".utf8))
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                if let end = received.firstRange(of: Array("\r\n\r\n".utf8)), received.count - end.upperBound >= first {
                    let head = String(decoding: received[..<end.lowerBound], as: UTF8.self)
                    let length = head.lowercased().split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                    return PausedDownload(fd: fd, head: head, bodyStart: Array(received[end.upperBound...]), length: length)
                }
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else {
                    close(fd)
                    throw CommandFailed(command: "the download ended after \(received.count) bytes", status: 1)
                }
                received += buffer[..<n]
            }
        }
    }

    /// Reads the rest of the body (to its Content-Length) and closes; throws if it ends short.
    func finish() async throws -> [UInt8] {
        try await offThePool { [self] in
            defer { close(fd) }
            var body = bodyStart
            var buffer = [UInt8](repeating: 0, count: 65536)
            while body.count < length {
                let n = recv(fd, &buffer, min(buffer.count, length - body.count), 0)
                guard n > 0 else { throw CommandFailed(command: "the download ended after \(body.count) of \(length) bytes", status: 1) }
                body += buffer[..<n]
            }
            return body
        }
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
