import Foundation
import Subprocess
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
public final class DepotProcess: Sendable {
    public let port: Int
    public let logPath: String
    private let child: ChildProcess
    public var pid: pid_t { child.pid }
    public var url: String { "http://127.0.0.1:\(port)" }

    private init(port: Int, logPath: String, child: ChildProcess) {
        self.port = port
        self.logPath = logPath
        self.child = child
    }

    /// Starts `depot serve --listen 127.0.0.1:0 ARGS…` and waits for its "listening" line.
    ///
    /// - Parameter user: run it as this ordinary user, as a real deployment does (see
    ///   `UnprivilegedUser`); nil runs it as the test runner.
    public static func start(_ arguments: [String], user: UnprivilegedUser? = nil) async throws -> DepotProcess {
        let logPath = NSTemporaryDirectory() + "depot-serve-\(UUID().uuidString).log"
        var command = [depotExecutable, "serve", "--listen", "127.0.0.1:0"] + arguments
        if let user { command = try user.command(command) }
        let child = try await ChildProcess.start(command, stderrPath: logPath)
        // "depot listening on http://127.0.0.1:PORT"
        let line = await child.nextLine() ?? ""
        guard let portText = line.split(separator: ":").last, let port = Int(portText) else {
            _ = await child.stop(signal: SIGKILL)
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw CommandFailed(command: "depot serve did not start: \(line)\n\(log)", status: 1)
        }
        return DepotProcess(port: port, logPath: logPath, child: child)
    }

    /// Sends a signal and awaits the process's end; nil if it could not be awaited.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM) async -> TerminationStatus? {
        await child.stop(signal: signal)
    }

    /// Sends a signal and blocks until the process is dead, for a `defer`.
    public func stopBlocking(signal: Int32 = SIGTERM) {
        child.stopBlocking(signal: signal)
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
    public func own(_ path: String) async throws {
        guard isDroppingPrivileges else { return }
        let result = try await spawn("/bin/chown", ["-R", "\(uid):\(gid)", path])
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
