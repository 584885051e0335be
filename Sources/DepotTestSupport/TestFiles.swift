import CFileIO
import Foundation

/// A fresh directory under the system temp dir, removed when the test ends.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "depot-test") {
        let template = NSTemporaryDirectory() + "\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { fatalError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func files(under sub: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: path + "/" + sub) else { return [] }
        return e.compactMap { item in
            let name = item as! String
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path + "/" + sub + "/" + name, isDirectory: &isDir)
            return isDir.boolValue ? nil : name
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), the same for the same seed.
public func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: state, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<raw.count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: UInt8(truncatingIfNeeded: state), toByteOffset: i, as: UInt8.self)
        }
    }
    return out
}

/// Runs a command and returns its standard output; throws on a non-zero exit.
///
/// Built on posix_spawn and waitpid rather than Foundation's Process, whose waitUntilExit
/// depends on Dispatch threads that tests running on the cooperative pool may be holding.
@discardableResult
public func run(_ executable: String, _ arguments: [String]) throws -> String {
    let result = try spawnAndWait(executable, arguments)
    guard result.status == 0 else {
        throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), status: result.status)
    }
    return String(decoding: result.stdout, as: UTF8.self)
}

/// Runs a command to completion, feeding `stdin` and collecting stdout (stderr is inherited,
/// or written to `stderrPath`). Returns the exit status (128 + signal when killed).
public func spawnAndWait(_ executable: String, _ arguments: [String], stdin: [UInt8]? = nil, stderrPath: String? = nil) throws -> (status: Int32, stdout: [UInt8]) {
    var outPipe: [Int32] = [0, 0], inPipe: [Int32] = [0, 0]
    guard pipe(&outPipe) == 0, pipe(&inPipe) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    for fd in outPipe + inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    if let stderrPath { posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
    for fd in [outPipe[0], outPipe[1], inPipe[0], inPipe[1]] { posix_spawn_file_actions_addclose(&actions, fd) }
    // Nothing else leaks into the child: a server it starts would otherwise keep other
    // children's pipes open, and their readers would never see the end of the output.
    _ = depot_spawn_close_from(&actions, 3)
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    close(outPipe[1])
    close(inPipe[0])
    guard rc == 0 else {
        close(outPipe[0]); close(inPipe[1])
        throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO)
    }
    // Feed stdin from another thread so a child that writes before reading cannot deadlock us.
    let writer = inPipe[1]
    let input = stdin ?? []
    let feeder = Thread {
        var offset = 0
        while offset < input.count {
            let n = input[offset...].withUnsafeBytes { write(writer, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            offset += n
        }
        close(writer)
    }
    feeder.start()
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(outPipe[0], &buffer, buffer.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += buffer[..<n]
    }
    close(outPipe[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exited = status & 0x7f == 0
    return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
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

/// The resident set size of this process in bytes (Linux `VmRSS`).
public func residentMemoryBytes() -> UInt64 {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) } ?? 0
        return kib * 1024
    }
    return 0
}

/// The repository's root directory (where Package.swift is).
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    fatalError("Package.swift not found above \(#filePath)")
}()

/// Whether this process is a child started by `runAlone` (so a test measures instead of
/// delegating).
public var isIsolatedTestProcess: Bool {
    ProcessInfo.processInfo.environment["DEPOT_ISOLATED_TEST"] == "1"
}

/// Runs the tests matching `filter` in a fresh copy of this test process, alone, and returns
/// its exit status and output. For measurements (memory) that other suites running in
/// parallel in this process would disturb.
public func runAlone(_ filter: String) async throws -> (status: Int32, output: String) {
    try await offThePool { try runAloneBlocking(filter) }
}

private func runAloneBlocking(_ filter: String) throws -> (status: Int32, output: String) {
    setenv("DEPOT_ISOLATED_TEST", "1", 1)
    defer { unsetenv("DEPOT_ISOLATED_TEST") }
    let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    let log = NSTemporaryDirectory() + "depot-isolated-\(UUID().uuidString).log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let result = try spawnAndWait(me, ["--testing-library", "swift-testing", "--filter", filter], stderrPath: log)
    let output = String(decoding: result.stdout, as: UTF8.self) + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    return (result.status, output)
}

/// Runs blocking work (a child process, a server start) on a thread of its own and awaits it.
///
/// Tests must not block Swift's cooperative pool: an in-process Depot answers on that pool,
/// and a few tests each blocked on their own Depot's answer would starve all of them.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}

/// `spawnAndWait` without blocking the cooperative pool.
public func spawn(_ executable: String, _ arguments: [String], stdin: [UInt8]? = nil) async throws -> (status: Int32, stdout: [UInt8]) {
    try await offThePool { try spawnAndWait(executable, arguments, stdin: stdin) }
}
