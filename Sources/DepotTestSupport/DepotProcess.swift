import CFileIO
import Foundation
import Synchronization

/// The `depot` binary built next to the running test bundle, or `DEPOT_BIN` (to measure another
/// build, e.g. the one before a change, with the same tests).
public let depotExecutable: String = {
    if let chosen = ProcessInfo.processInfo.environment["DEPOT_BIN"], !chosen.isEmpty { return chosen }
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
    ///
    /// - Parameter user: run it as this ordinary user, as a real deployment does (see
    ///   `UnprivilegedUser`); nil runs it as the test runner.
    public static func start(_ arguments: [String], user: UnprivilegedUser? = nil) async throws -> DepotProcess {
        try await offThePool { try DepotProcess(arguments, user: user) }
    }

    init(_ arguments: [String], user: UnprivilegedUser? = nil) throws {
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
        var all = [depotExecutable, "serve", "--listen", "127.0.0.1:0"] + arguments
        if let user { all = try user.command(all) }
        let argv: [UnsafeMutablePointer<CChar>?] = all.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, all[0], &actions, nil, argv, environ)
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

/// An ordinary user to run `depot serve` as, the way deployments run it: as root (CI), the
/// `nobody` account through `setpriv` with no supplementary groups; as anyone else, that user
/// as is. Root passes permission checks an ordinary user fails (`SO_DEBUG` at the
/// socket level, files it does not own), so only this finds what a real deployment hits.
public struct UnprivilegedUser: Sendable {
    public let uid: uid_t
    public let gid: gid_t

    /// `nobody` when the tests run as root, else the current user.
    public static var forServe: UnprivilegedUser {
        geteuid() == 0 ? UnprivilegedUser(uid: 65534, gid: 65534) : UnprivilegedUser(uid: geteuid(), gid: getegid())
    }

    public var isDroppingPrivileges: Bool { uid != geteuid() }

    /// Gives the user a directory (and all below it).
    public func own(_ path: String) throws {
        guard isDroppingPrivileges else { return }
        let result = try spawnAndWait("/bin/chown", ["-R", "\(uid):\(gid)", path])
        guard result.status == 0 else { throw CommandFailed(command: "chown -R \(uid):\(gid) \(path)", status: result.status) }
    }

    /// The command line that runs `command` as this user. The depot binary is copied where the
    /// user can read it: the build folder may sit under a directory only root may enter.
    func command(_ command: [String]) throws -> [String] {
        guard isDroppingPrivileges else { return command }
        let executable = try Self.readableCopy(of: command[0])
        return ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", executable] + command.dropFirst()
    }

    /// Copies made, each with the directory that holds it for the whole test run.
    private static let copies = Mutex<[String: (path: String, directory: TemporaryDirectory)]>([:])

    static func readableCopy(of executable: String) throws -> String {
        try copies.withLock { copies in
            if let copy = copies[executable] { return copy.path }
            let directory = TemporaryDirectory("depot-unprivileged-bin")
            let copy = directory.path + "/" + URL(fileURLWithPath: executable).lastPathComponent
            try FileManager.default.copyItem(atPath: executable, toPath: copy)
            chmod(directory.path, 0o755)
            chmod(copy, 0o755)
            copies[executable] = (copy, directory)
            return copy
        }
    }
}
