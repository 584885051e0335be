@testable import BlobStore
import DepotTestSupport
import Foundation
import Testing

/// ENOSPC on a real, small filesystem: a tmpfs mounted for the test (needs root, as CI has).
@Suite(.enabled(if: rootTestsEnabled, "mounting a tmpfs needs root; CI=true runs it anyway, to fail"), .serialized)
struct DiskFullTests {
    final class SmallFilesystem {
        let dir = TemporaryDirectory("depot-enospc")
        init(kibibytes: Int) async throws {
            try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(kibibytes)k", "tmpfs", dir.path])
        }
        deinit { unmount(dir.path) }
        /// Bytes an ordinary write can still use (statvfs).
        var freeBytes: Int {
            var stats = statvfs()
            guard statvfs(dir.path, &stats) == 0 else { return 0 }
            return Int(stats.f_bavail) * Int(stats.f_frsize)
        }
    }

    @Test func streamingPastTheEndOfTheDiskLeavesNothing() async throws {
        let fs = try await SmallFilesystem(kibibytes: 1024)
        let store = try BlobStore(dataDirectory: fs.dir.path + "/data")
        let writer = try store.makeWriter(alsoCompute: [.sha512])
        let chunk = pseudoRandomBytes(count: 256 << 10, seed: 1)
        let error = #expect(throws: BlobStoreError.self) {
            for _ in 0..<16 { try writer.write(chunk) }
        }
        #expect(error == .diskFull(path: writer.temporaryPath))
        #expect(error?.description.contains("disk full") == true)
        #expect(fs.dir.files(under: "data/tmp").isEmpty)
        #expect(fs.dir.files(under: "data/blobs").isEmpty)
        // The space comes back: a blob that fits still commits. Another test's child process
        // can share the descriptor between its fork and its exec (the table is copied whole;
        // close-on-exec takes effect only at exec), and tmpfs frees the pages when the last
        // holder lets go, so the space is waited for rather than assumed at once.
        let deadline = ContinuousClock.now + .seconds(10)
        while fs.freeBytes < chunk.count + (64 << 10), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(fs.freeBytes >= chunk.count, "the failed writer's space was given back: \(fs.freeBytes) bytes free")
        let small = try store.makeWriter()
        try small.write(chunk)
        #expect(store.contains(try small.commit().digest))
    }

    @Test func aKnownSizeThatCannotFitFailsBeforeAnyByte() async throws {
        let fs = try await SmallFilesystem(kibibytes: 1024)
        let store = try BlobStore(dataDirectory: fs.dir.path + "/data")
        #expect(throws: BlobStoreError.self) { try store.makeWriter(expecting: .init(size: 8 << 20)) }
        #expect(fs.dir.files(under: "data/tmp").isEmpty)
    }
}
