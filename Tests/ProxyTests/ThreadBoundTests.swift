import BlobStore
import DepotTestSupport
import Foundation
import Glance
import Testing

/// `depot serve`'s threads under many transfers: libcurl runs on one transfer loop and disk
/// work on bounded pools, so the count does not grow with the transfers in flight (it grew by
/// one thread per transfer, fill and upload before).
@Suite(.serialized) struct ThreadBoundTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// What `depot serve` may run, whatever the load: the main thread, NIO's event loops and
    /// file-read pool (one per core, at least 2), Swift's cooperative pool (one per core), the
    /// disk pools (`max(4, cores)` + 2 + 1 for evictions), the transfer loop, `HashPool`'s
    /// threads for the writers' hash lanes (one per core, at least 2), and a margin of 8 for the
    /// runtime's own.
    static var bound: Int {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        return 1 + 2 * max(2, cores) + cores + max(4, cores) + 2 + 1 + 1 + max(2, cores) + 8
    }

    @Test func sixtyFourColdFillsAndSixteenUploadsRunOnAFixedNumberOfThreads() async throws {
        let size = 2 << 20
        let setup = glanceAsAlice(glance.url)
        var images: [(id: String, sha256: String)] = []
        for seed in 0..<64 {
            let bytes = pseudoRandomBytes(count: size, seed: 6400 + UInt64(seed))
            images.append((try await uploadImage(setup, bytes).id, Digest.of(bytes, algorithm: .sha256).hex))
        }
        // Each backend connection gets 1 MiB/s: every fill takes two seconds, so all of them
        // (and the uploads) are in flight at once.
        let throttle = try FaultProxy(upstreamPort: glance.port)
        defer { throttle.stop() }
        throttle.setFaults { $0.bytesPerSecond = 1 << 20 }
        let data = TemporaryDirectory("depot-threads")
        let config = data.path + "/depot.yaml"
        try "limits:\n  max_fills: 64\n  max_uploads: 16\n".write(toFile: config, atomically: true, encoding: .utf8)
        let depot = try await DepotProcess.start([
            "--config", config, "--data-dir", data.path + "/data", "--glance-url", throttle.url, "--service-token", DepotHarness.serviceToken,
        ])
        defer { depot.stopBlocking() }
        var targets: [String] = []
        for _ in 0..<16 { targets.append(try await createImage(depot.url).id) }
        let file = try TestImageFile(megabytes: 2, seed: 6499)
        let idle = threadCount(depot.pid)

        let sampler = Task {
            var peak = 0
            while !Task.isCancelled {
                peak = max(peak, threadCount(depot.pid))
                try? await Task.sleep(for: .milliseconds(20))
            }
            return peak
        }
        let (downloads, uploads) = try await withThrowingTaskGroup(of: (ClientExchange?, Int?).self) { group in
            for image in images {
                group.addTask { (try await curlStream("\(depot.url)/v2/images/\(image.id)/file", token: GlanceServer.alice), nil) }
            }
            for target in targets {
                group.addTask {
                    let put = try await curl("\(depot.url)/v2/images/\(target)/file", ["-X", "PUT", "-T", file.path, "--limit-rate", "1M"])
                    return (nil, put.status)
                }
            }
            return try await group.reduce(into: ([ClientExchange](), [Int]())) { all, result in
                if let download = result.0 { all.0.append(download) }
                if let status = result.1 { all.1.append(status) }
            }
        }
        sampler.cancel()
        let peak = await sampler.value

        let expected = Set(images.map(\.sha256))
        #expect(downloads.count == 64 && downloads.allSatisfy { $0.status == 200 && expected.contains($0.sha256) })
        #expect(downloads.filter { $0.header("x-depot-cache") == "miss" }.count == 64, "every download started a fill of its own")
        #expect(uploads == [Int](repeating: 204, count: 16))
        print("depot serve threads: \(idle) idle, \(peak) at peak during 64 cold fills and 16 uploads (bound \(Self.bound))")
        #expect(peak <= Self.bound, "peak \(peak) threads, bound \(Self.bound)")
    }
}

/// `Threads:` of /proc/PID/status: the process's thread count now.
func threadCount(_ pid: pid_t) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    let line = status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
    return line.flatMap { Int($0.dropFirst(8).trimmingCharacters(in: .whitespaces)) } ?? 0
}
