import Foundation
import Subprocess
import SystemPackage

/// Runs a command and returns its standard output; throws on a non-zero exit.
@discardableResult
public func run(_ executable: String, _ arguments: [String]) async throws -> String {
    let result = try await spawn(executable, arguments)
    guard result.status == 0 else {
        throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), status: result.status)
    }
    return String(decoding: result.stdout, as: UTF8.self)
}

/// Runs a command to completion, feeding `stdin` and collecting stdout (stderr is inherited,
/// or written to `stderrPath`). Returns the exit status (128 + signal when killed).
///
/// On swift-subprocess: the child gets no descriptor above 2 (it closes them all before exec),
/// so a server it starts never holds another child's pipe open, and stdin is fed while
/// stdout is read, so a child that writes before it reads cannot deadlock.
public func spawn(
    _ executable: String, _ arguments: [String], stdin: [UInt8]? = nil, stderrPath: String? = nil,
    environment: Environment = .inherit
) async throws -> (status: Int32, stdout: [UInt8]) {
    let error: FileDescriptorOutput
    if let stderrPath {
        let fd = try FileDescriptor.open(FilePath(stderrPath), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
        error = .fileDescriptor(fd, closeAfterSpawningProcess: true)
    } else {
        error = .currentStandardError
    }
    let result = try await collect(executable, arguments, environment: environment, stdin: stdin ?? [], error: error)
    return (exitStatus(result.terminationStatus), result.standardOutput)
}

/// Runs a command to completion and collects its standard output (and standard error, as
/// `error` says), feeding it `stdin` while it runs.
///
/// Input goes through the closure body's writer, finished by the body, never as an `.array`
/// input: swift-subprocess 1.0.2 writes those in a task that, when the write fails (the child
/// ended without reading it all, or ended first and the write was cancelled), drops its
/// writer unfinished, and the writer's deinit traps ("FileDescriptor … was not closed").
private func collect<Failure: ErrorOutputProtocol>(
    _ executable: String, _ arguments: [String], environment: Environment, stdin: [UInt8], error: Failure
) async throws -> ExecutionResult<Void, BytesOutput, Failure> {
    ignoreBrokenPipes()
    let configuration = Configuration(executable: .path(FilePath(executable)), arguments: Arguments(arguments), environment: environment)
    if stdin.isEmpty {
        return try await Subprocess.run(configuration, input: .none, output: .bytes(limit: .max), error: error)
    }
    return try await Subprocess.run(configuration, input: .inputWriter, output: .bytes(limit: .max), error: error) { execution in
        // A child may end without reading all of it: its answer says so, not an error here.
        _ = try? await execution.standardInputWriter.write(stdin)
        try? await execution.standardInputWriter.finish()
    }
}

/// Runs a command to completion as `spawn` does, and collects its standard error too.
///
/// - Parameter environment: the child's whole environment; nil inherits the runner's.
public func spawnCollectingErrors(
    _ executable: String, _ arguments: [String], stdin: [UInt8] = [], environment: [String: String]? = nil
) async throws -> (status: Int32, stdout: [UInt8], stderr: String) {
    let chosen: Environment = environment.map { .custom(Dictionary(uniqueKeysWithValues: $0.map { (Environment.Key(stringLiteral: $0.key), $0.value) })) } ?? .inherit
    let result = try await collect(executable, arguments, environment: chosen, stdin: stdin, error: .string(limit: .max))
    return (exitStatus(result.terminationStatus), result.standardOutput, result.standardError)
}

/// Makes a write to a child that has ended fail with EPIPE instead of killing the test runner:
/// swift-subprocess leaves SIGPIPE as it finds it, at its default, which ends the process.
/// Children start with every signal at its default again.
func ignoreBrokenPipes() {
    _ = brokenPipesIgnored
}

private let brokenPipesIgnored: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

/// A termination status as a shell reports it: the exit code, or 128 + the signal.
public func exitStatus(_ status: TerminationStatus) -> Int32 {
    switch status {
    case .exited(let code): code
    case .signaled(let signal): 128 + signal
    }
}

extension TerminationStatus {
    /// Whether a signal ended the process (any signal: Foundation's `.uncaughtSignal`).
    public var endedBySignal: Bool {
        if case .signaled = self { true } else { false }
    }
}

public struct CommandFailed: Error, CustomStringConvertible {
    public let command: String
    public let status: Int32
    public init(command: String, status: Int32) {
        self.command = command
        self.status = status
    }
    public var description: String { "\(command) exited \(status)" }
}

/// Whether this process is a child started by `runAlone` (so a test measures instead of
/// delegating).
public var isIsolatedTestProcess: Bool {
    ProcessInfo.processInfo.environment["DEPOT_ISOLATED_TEST"] == "1"
}

/// Runs the tests matching `filter` in a fresh copy of this test process, alone, and returns
/// its exit status and output. For measurements (memory) that other suites running in
/// parallel in this process would disturb.
public func runAlone(_ filter: String) async throws -> (status: Int32, output: String) {
    let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    let log = NSTemporaryDirectory() + "depot-isolated-\(UUID().uuidString).log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let result = try await spawn(
        me, ["--testing-library", "swift-testing", "--filter", filter], stderrPath: log,
        environment: .inherit.updating(["DEPOT_ISOLATED_TEST": "1"])
    )
    let output = String(decoding: result.stdout, as: UTF8.self) + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    return (result.status, output)
}

/// Runs blocking work (a server start, a socket exchange) on a thread of its own and awaits it.
///
/// Tests must not block Swift's cooperative pool: an in-process Depot answers on that pool,
/// and a few tests each blocked on their own Depot's answer would starve all of them.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}

/// Detaches the filesystem mounted at `path` (`umount -l`), from sync code such as a `defer`
/// or a `deinit`, where a child process could not be awaited.
public func unmount(_ path: String) {
    _ = umount2(path, Int32(MNT_DETACH))
}
