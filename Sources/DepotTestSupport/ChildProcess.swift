import Foundation
import Subprocess
import Synchronization
import SystemPackage

/// A child process that outlives the call that started it (`depot serve`, `strace -p`, a
/// client driven one request at a time), on swift-subprocess: its closure-body `run` goes on
/// in a task this handle owns, and `stop` signals the child and awaits that task, which reaps
/// it.
///
/// The body lasts as long as the child's standard output, which it reads line by line (so a
/// chatty child never blocks): until the child exits, for the children here, which never
/// close it earlier. Signals and input go through the execution, and only while the body
/// runs: never to a pid that was reaped and may have been reused.
public final class ChildProcess: Sendable {
    typealias Running = Execution<CustomWriteInput, SequenceOutput, FileDescriptorOutput>

    /// The execution while the body runs.
    private final class Slot: Sendable {
        let execution = Mutex<Running?>(nil)
    }

    public let pid: pid_t
    private let running: Slot
    private let lines: AsyncStream<String>
    private let ended: Task<TerminationStatus, any Error>

    private init(pid: pid_t, running: Slot, lines: AsyncStream<String>, ended: Task<TerminationStatus, any Error>) {
        self.pid = pid
        self.running = running
        self.lines = lines
        self.ended = ended
    }

    /// Starts `command` and returns once it runs (and has taken `stdin`).
    ///
    /// - Parameters:
    ///   - stdin: nil: the child's input ends at once. Otherwise these bytes are written first
    ///     and its input stays open (for `write`) until it ends: a writer killed mid-input.
    ///   - stderrPath: a file for its standard error (truncated); nil inherits the runner's.
    public static func start(_ command: [String], stdin: [UInt8]? = nil, stderrPath: String? = nil) async throws -> ChildProcess {
        ignoreBrokenPipes()
        let running = Slot()
        let (pids, pidSink) = AsyncStream.makeStream(of: pid_t.self)
        let (lines, lineSink) = AsyncStream.makeStream(of: String.self)
        let error: FileDescriptorOutput
        if let stderrPath {
            let fd = try FileDescriptor.open(
                FilePath(stderrPath), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
            error = .fileDescriptor(fd, closeAfterSpawningProcess: true)
        } else {
            error = .currentStandardError
        }
        let ended = Task {
            defer { pidSink.finish(); lineSink.finish() }
            let result = try await Subprocess.run(
                .path(FilePath(command[0])), arguments: Arguments(Array(command.dropFirst())),
                input: .inputWriter, output: .sequence, error: error
            ) { execution in
                running.execution.withLock { $0 = execution }
                defer { running.execution.withLock { $0 = nil } }
                if let stdin {
                    _ = try? await execution.standardInputWriter.write(stdin)
                } else {
                    try? await execution.standardInputWriter.finish()
                }
                pidSink.yield(execution.processIdentifier.value)
                // An error is the end of the output, which ends the body either way.
                do {
                    for try await line in execution.standardOutput.strings(bufferingPolicy: .unbounded) { lineSink.yield(line) }
                } catch {}
            }
            return result.terminationStatus
        }
        var started = pids.makeAsyncIterator()
        guard let pid = await started.next() else {
            _ = try await ended.value
            throw CommandFailed(command: command.joined(separator: " ") + " ended before it ran", status: -1)
        }
        return ChildProcess(pid: pid, running: running, lines: lines, ended: ended)
    }

    /// The next line of standard output, or nil once the child ended. One reader at a time.
    public func nextLine() async -> String? {
        var iterator = lines.makeAsyncIterator()
        return await iterator.next()
    }

    /// Writes to the child's standard input (started with `stdin`).
    public func write(_ bytes: [UInt8]) async throws {
        guard let execution = running.execution.withLock({ $0 }) else {
            throw CommandFailed(command: "write to pid \(pid), which has ended", status: -1)
        }
        _ = try await execution.standardInputWriter.write(bytes)
    }

    /// Whether the child still runs (its output is still open).
    public var isRunning: Bool { running.execution.withLock { $0 != nil } }

    public func send(_ signal: Int32) {
        running.execution.withLock { execution in _ = try? execution?.send(signal: Signal(rawValue: signal)) }
    }

    /// Awaits the child's end; nil if its task failed.
    public func wait() async -> TerminationStatus? {
        try? await ended.value
    }

    /// Sends `signal` and awaits the child's end; nil if its task failed.
    public func stop(signal: Int32) async -> TerminationStatus? {
        send(signal)
        return await wait()
    }

    /// Sends `signal` and waits, blocking this thread, until the child is dead, for a `defer`
    /// that cannot await. Waits on a copy of its process descriptor (readable once it exits),
    /// not on the task that reaps it: that needs the cooperative pool, which this thread may
    /// be one of.
    public func stopBlocking(signal: Int32) {
        let descriptor = running.execution.withLock { execution -> Int32 in
            guard let execution else { return -1 }
            _ = try? execution.send(signal: Signal(rawValue: signal))
            return fcntl(execution.processIdentifier.processDescriptor, F_DUPFD_CLOEXEC, 0)
        }
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var event = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        while poll(&event, 1, -1) < 0 && errno == EINTR {}
    }
}
