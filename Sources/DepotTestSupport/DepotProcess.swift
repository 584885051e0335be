import CFileIO
import Foundation

/// The `depot` binary built next to the running test bundle.
public let depotExecutable: String = {
    let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = testBinary.deletingLastPathComponent()
    while dir.path != "/" {
        let candidate = dir.appendingPathComponent("depot").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    fatalError("depot executable not found next to \(testBinary.path); run `swift build` first")
}()

/// `depot serve` as a separate process, for tests that kill it.
public final class DepotProcess: @unchecked Sendable {
    public let pid: pid_t
    public let port: Int
    public let logPath: String
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Starts `depot serve --listen 127.0.0.1:0 ARGS…` and waits for its "listening" line.
    public static func start(_ arguments: [String]) async throws -> DepotProcess {
        try await offThePool { try DepotProcess(arguments) }
    }

    init(_ arguments: [String]) throws {
        var outPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0 else { throw POSIXError(.EIO) }
        for fd in outPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        logPath = NSTemporaryDirectory() + "depot-serve-\(UUID().uuidString).log"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addclose(&actions, outPipe[0])
        posix_spawn_file_actions_addclose(&actions, outPipe[1])
        _ = depot_spawn_close_from(&actions, 3)
        let all = [depotExecutable, "serve", "--listen", "127.0.0.1:0"] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = all.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, depotExecutable, &actions, nil, argv, environ)
        close(outPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO)
        }
        pid = child
        // Read the first line: "depot listening on http://127.0.0.1:PORT".
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(outPipe[0], &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        close(outPipe[0])
        let text = String(decoding: line, as: UTF8.self)
        guard let portText = text.split(separator: ":").last, let port = Int(portText) else {
            kill(child, SIGKILL)
            var status: Int32 = 0
            waitpid(child, &status, 0)
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw CommandFailed(command: "depot serve did not start: \(text)\n\(log)", status: 1)
        }
        self.port = port
    }

    /// Sends a signal and waits (off the cooperative pool) for the process to end.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM) async -> Int32 {
        (try? await offThePool { self.stopBlocking(signal: signal) }) ?? -1
    }

    /// Sends a signal and waits for the process to end; returns its wait status.
    @discardableResult
    public func stopBlocking(signal: Int32 = SIGTERM) -> Int32 {
        kill(pid, signal)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}
