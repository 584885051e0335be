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
public final class SyscallTrace: Sendable {
    public let path: String
    private let tracer: ChildProcess

    /// Attaches to every thread of `pid` and returns once strace traces them.
    /// - Parameter syscalls: the calls to record (strace's `-e trace=` names).
    public static func attach(to pid: pid_t, syscalls: [String], stringLimit: Int = 1024) async throws -> SyscallTrace {
        let path = NSTemporaryDirectory() + "depot-strace-\(UUID().uuidString).txt"
        let strace = ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let strace else { throw CommandFailed(command: "strace not found: run scripts/install-deps", status: 127) }
        // strace is stopped with SIGINT, which it would keep blocked if the test runner's
        // signal mask (a child inherits it) blocked it: Subprocess starts children with an
        // empty mask and every signal at its default.
        let tracer = try await ChildProcess.start([
            strace, "-f", "-qq", "-yy", "-s", "\(stringLimit)", "-e", "signal=none", "-e", "trace=" + syscalls.joined(separator: ","),
            "-o", path, "-p", "\(pid)",
        ], stderrPath: path + ".err")
        // Attached when every thread names strace as its tracer.
        let deadline = ContinuousClock.now + .seconds(10)
        while !everyThreadTraced(pid, by: tracer.pid) {
            if !tracer.isRunning || ContinuousClock.now > deadline {
                let status = await tracer.stop(signal: SIGKILL)
                let err = (try? String(contentsOfFile: path + ".err", encoding: .utf8)) ?? ""
                throw CommandFailed(command: "strace -p \(pid) did not attach (\(status.map { "\($0)" } ?? "?")): \(err)", status: 1)
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return SyscallTrace(path: path, tracer: tracer)
    }

    private init(path: String, tracer: ChildProcess) {
        self.path = path
        self.tracer = tracer
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
        _ = await tracer.stop(signal: SIGINT)
        return Self.parse(try String(contentsOfFile: path, encoding: .utf8))
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
