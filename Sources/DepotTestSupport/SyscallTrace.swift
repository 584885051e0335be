import CFileIO
import Foundation

/// One system call seen by strace: which thread made it, its arguments as strace printed them
/// (with `-yy`, file descriptors carry their path or socket, e.g. `5</data/tmp/x.partial>`),
/// and where it started and ended in the trace.
public struct Syscall: Sendable, CustomStringConvertible {
    public let thread: Int
    public let name: String
    public let arguments: String
    public let result: String
    /// Line of the trace where the call was entered, and where it returned (the same line
    /// unless another thread's calls came in between).
    public let entry: Int
    public let exit: Int

    public var description: String { "[\(entry)-\(exit)] \(thread) \(name)(\(arguments.prefix(200))) = \(result)" }
}

/// `strace -f` attached to a running process (every thread), recording a chosen set of system
/// calls until `finish()`.
///
/// The order of the lines is an order the calls really had: a thread stops at each call's
/// entry and return until strace has written it down, so a call that returned before another
/// one started (the second waited for the first) is written down before it. Needs strace
/// (scripts/install-deps) and the right to ptrace the process (root, or ptrace_scope 0).
public final class SyscallTrace: @unchecked Sendable {
    public let path: String
    let tracer: pid_t
    let traced: pid_t

    /// Attaches to every thread of `pid` and returns once strace traces them.
    /// - Parameter syscalls: the calls to record (strace's `-e trace=` names).
    public static func attach(to pid: pid_t, syscalls: [String], stringLimit: Int = 1024) async throws -> SyscallTrace {
        try await offThePool { try SyscallTrace(pid: pid, syscalls: syscalls, stringLimit: stringLimit) }
    }

    init(pid: pid_t, syscalls: [String], stringLimit: Int) throws {
        traced = pid
        path = NSTemporaryDirectory() + "depot-strace-\(UUID().uuidString).txt"
        let strace = ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let strace else { throw CommandFailed(command: "strace not found: run scripts/install-deps", status: 127) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, path + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = depot_spawn_close_from(&actions, 3)
        let all = [
            strace, "-f", "-qq", "-yy", "-s", "\(stringLimit)", "-e", "signal=none", "-e", "trace=" + syscalls.joined(separator: ","),
            "-o", path, "-p", "\(pid)",
        ]
        let argv: [UnsafeMutablePointer<CChar>?] = all.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // strace is stopped with SIGINT, which it keeps blocked if the test runner (whose signal
        // mask a child inherits) blocks it: start it with no signal blocked and INT at default.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), interrupt = sigset_t()
        sigemptyset(&none)
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &interrupt)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let rc = posix_spawn(&child, strace, &actions, &attributes, argv, environ)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        tracer = child
        // Attached when every thread names strace as its tracer.
        let deadline = Date().addingTimeInterval(10)
        while !Self.everyThreadTraced(pid, by: child) {
            var status: Int32 = 0
            if waitpid(child, &status, WNOHANG) == child || Date() > deadline {
                let err = (try? String(contentsOfFile: path + ".err", encoding: .utf8)) ?? ""
                throw CommandFailed(command: "strace -p \(pid) did not attach: \(err)", status: status)
            }
            usleep(10_000)
        }
    }

    static func everyThreadTraced(_ pid: pid_t, by tracer: pid_t) -> Bool {
        guard let threads = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"), !threads.isEmpty else { return false }
        return threads.allSatisfy { thread in
            let status = (try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/status", encoding: .utf8)) ?? ""
            return status.split(separator: "\n").contains { $0 == "TracerPid:\t\(tracer)" }
        }
    }

    /// Detaches strace (the process goes on) and returns the calls it recorded, in order.
    public func finish() async throws -> [Syscall] {
        try await offThePool {
            kill(self.tracer, SIGINT)
            var status: Int32 = 0
            while waitpid(self.tracer, &status, 0) < 0 && errno == EINTR {}
            return Self.parse(try String(contentsOfFile: self.path, encoding: .utf8))
        }
    }

    /// Parses strace's `-f` output: "TID name(args) = result", or a call split in two lines,
    /// "TID name(args <unfinished ...>" and later "TID <... name resumed>rest) = result".
    public static func parse(_ text: String) -> [Syscall] {
        var calls: [Syscall] = []
        var open: [Int: (name: String, arguments: String, entry: Int)] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            guard let space = line.firstIndex(of: " "), let thread = Int(line[..<space]) else { continue }
            let rest = line[space...].drop { $0 == " " }
            if rest.hasPrefix("<... ") {
                guard let started = open.removeValue(forKey: thread), let close = rest.range(of: " resumed>") else { continue }
                let (arguments, result) = splitResult(String(rest[close.upperBound...]))
                calls.append(Syscall(thread: thread, name: started.name, arguments: started.arguments + arguments, result: result,
                                     entry: started.entry, exit: index))
            } else if let paren = rest.firstIndex(of: "(") {
                let name = String(rest[..<paren])
                let body = String(rest[rest.index(after: paren)...])
                if body.hasSuffix(" <unfinished ...>") {
                    open[thread] = (name, String(body.dropLast(" <unfinished ...>".count)), index)
                } else {
                    let (arguments, result) = splitResult(body)
                    calls.append(Syscall(thread: thread, name: name, arguments: arguments, result: result, entry: index, exit: index))
                }
            }
        }
        return calls.sorted { $0.entry < $1.entry }
    }

    /// "args)   = result" → ("args", "result"); strace pads short lines before the "=".
    static func splitResult(_ text: String) -> (String, String) {
        guard let equals = text.range(of: #"\)\s+= "#, options: [.regularExpression, .backwards]) else { return (text, "?") }
        return (String(text[..<equals.lowerBound]), String(text[equals.upperBound...]))
    }
}
