import BlobStore
import DepotTestSupport
import Foundation
import Testing

/// One process per data directory: a running `depot serve` refuses a second server and the
/// offline tools, naming its pid; its lock goes with it however it ends.
@Suite(.serialized) struct DataDirectoryLockTests {
    /// `depot serve` in front of a real Glance (the start must not depend on what Depot does
    /// with a backend it cannot reach).
    static func serve(_ dir: String) async throws -> DepotProcess {
        let glance = try await GlanceServer.shared()
        return try await DepotProcess.start(["--data-dir", dir, "--glance-url", glance.url, "--service-token", "depot:service:admin"])
    }

    /// `depot serve` that must refuse to start: one that starts anyway is stopped after 30 s
    /// (exit 124) rather than hanging the test.
    static func serveExpectingRefusal(_ dir: String) async throws -> Outcome {
        let glance = try await GlanceServer.shared()
        let result = try await spawnCollectingErrors("/usr/bin/timeout", [
            "30", depotExecutable, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--glance-url", glance.url, "--service-token", "depot:service:admin",
        ])
        return Outcome(status: result.status, stdout: Data(result.stdout), stderr: result.stderr)
    }

    @Test func aSecondServerAndTheOfflineToolsAreRefusedWithTheHoldersPid() async throws {
        let dir = TemporaryDirectory("depot-lock")
        let first = try await Self.serve(dir.path)
        let second = try await Self.serveExpectingRefusal(dir.path)
        #expect(second.status != 0)
        #expect(second.stderr.contains("pid \(first.pid)"), "\(second.stderr)")
        #expect(second.stderr.contains("(depot serve)"), "the message names the holder's command: \(second.stderr)")
        #expect(!second.stderr.contains("depot:service:admin"), "never the holder's tokens: \(second.stderr)")
        #expect(!second.text.contains("listening"))

        let refusals: [[String]] = [
            ["fsck", "--data-dir", dir.path],
            ["fsck", "--dry-run", "--data-dir", dir.path],
            ["store", "put", "-", "--data-dir", dir.path],
            ["store", "verify", "--data-dir", dir.path],
            ["store", "ls", "--data-dir", dir.path],
            ["cache", "ls", "--data-dir", dir.path],
            ["pushes", "ls", "--data-dir", dir.path],
        ]
        for arguments in refusals {
            let outcome = try await depot(arguments, stdin: Data("abc".utf8))
            #expect(outcome.status != 0, "\(arguments) ran beside a server")
            #expect(outcome.stderr.contains("pid \(first.pid)"), "\(arguments): \(outcome.stderr)")
        }
        #expect(dir.files(under: "blobs").isEmpty, "store put wrote nothing")

        // The server still answers, and after it stops the same commands work.
        let health = try await spawn("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", first.url + "/healthz"])
        #expect(String(decoding: health.stdout, as: UTF8.self) == "200")
        #expect(await first.stop() == .exited(0))
        let put = try await depot(["store", "put", "-", "--data-dir", dir.path], stdin: Data("abc".utf8))
        #expect(put.status == 0, "\(put.stderr)")
        let fsck = try await depot(["fsck", "--data-dir", dir.path])
        #expect(fsck.status == 0, "\(fsck.stderr)")
        #expect(fsck.text.contains("checked 1 blobs"), "\(fsck.text)")
        let again = try await Self.serve(dir.path)
        await again.stop()
    }

    /// flock goes with the process: a server killed with SIGKILL leaves a lock file with its
    /// pid in it, and that blocks nothing.
    @Test func aServerKilledWithSIGKILLLeavesNoLockBehind() async throws {
        let dir = TemporaryDirectory("depot-lock")
        let killed = try await Self.serve(dir.path)
        let status = await killed.stop(signal: SIGKILL)
        #expect(status == .signaled(SIGKILL))
        let recorded = try String(contentsOfFile: dir.path + "/depot.lock", encoding: .utf8)
        #expect(recorded.trimmingCharacters(in: .whitespacesAndNewlines) == "\(killed.pid)")
        let fsck = try await depot(["fsck", "--data-dir", dir.path])
        #expect(fsck.status == 0, "\(fsck.stderr)")
        let next = try await Self.serve(dir.path)
        let refused = try await depot(["fsck", "--data-dir", dir.path])
        #expect(refused.stderr.contains("pid \(next.pid)") && !refused.stderr.contains("pid \(killed.pid)"), "\(refused.stderr)")
        await next.stop()
    }

    /// The start-up check writes where the first upload will: tmp/, a link into blobs/, the
    /// Catalog. Each is made read-only with a read-only mount (root ignores permission bits).
    @Test(.enabled(if: geteuid() == 0, "read-only mounts need root"), arguments: ["blobs/sha256", "tmp", "catalog.sqlite"])
    func aServerRefusesToStartWhenItCannotWriteWhereUploadsGo(_ part: String) async throws {
        let dir = TemporaryDirectory("depot-lock")
        // A first run lays out the directory and the Catalog.
        let put = try await depot(["store", "put", "-", "--data-dir", dir.path], stdin: Data("abc".utf8))
        #expect(put.status == 0)
        _ = try await depot(["fsck", "--data-dir", dir.path])
        let target = dir.path + "/" + part
        if part.hasSuffix(".sqlite") {
            try await run("/bin/mount", ["--bind", target, target])
            try await run("/bin/mount", ["-o", "remount,bind,ro", target])
        } else {
            try await run("/bin/mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", target])
        }
        defer { unmount(target) }
        let serve = try await Self.serveExpectingRefusal(dir.path)
        #expect(serve.status != 0, "started with \(part) read-only")
        #expect(serve.stderr.contains(part.hasSuffix(".sqlite") ? "cannot write the catalog" : "cannot write blobs"), "\(serve.stderr)")
        #expect(serve.stderr.contains(part.hasSuffix(".sqlite") ? "readonly database" : "Read-only file system"), "\(serve.stderr)")
    }
}

/// The lock itself, in one process (flock conflicts between open files, not processes).
@Suite struct DataDirectoryLockUnitTests {
    @Test func exclusiveExcludesAllAndSharedExcludesOnlyExclusive() throws {
        let dir = TemporaryDirectory("depot-lock")
        do {
            let server = try DataDirectoryLock(directory: dir.path, mode: .exclusive)
            #expect(throws: DataDirectoryLockError.self) { try DataDirectoryLock(directory: dir.path, mode: .shared) }
            do {
                _ = try DataDirectoryLock(directory: dir.path, mode: .exclusive)
                Issue.record("a second exclusive lock was granted")
            } catch {
                guard case let .held(_, holders) = error else {
                    Issue.record("unexpected \(error)")
                    return
                }
                #expect(holders.map(\.pid).contains(getpid()))
                #expect(holders.allSatisfy { $0.exclusive })
            }
            withExtendedLifetime(server) {}
        }
        let reader = try DataDirectoryLock(directory: dir.path, mode: .shared)
        let otherReader = try DataDirectoryLock(directory: dir.path, mode: .shared)
        do {
            _ = try DataDirectoryLock(directory: dir.path, mode: .exclusive)
            Issue.record("an exclusive lock was granted beside readers")
        } catch {
            let message = error.description
            #expect(message.contains("being read by pid \(getpid())"), "\(message)")
        }
        withExtendedLifetime((reader, otherReader)) {}
    }

    @Test func aReaderDoesNotCreateADirectoryThatIsNotThere() {
        let missing = NSTemporaryDirectory() + "depot-lock-missing-\(UUID().uuidString)"
        #expect(throws: DataDirectoryLockError.self) { try DataDirectoryLock(directory: missing, mode: .shared) }
        #expect(!FileManager.default.fileExists(atPath: missing))
    }
}
