import Foundation

/// Python's `http.server` over a directory on loopback: a real web server that is not an
/// image service, as an operator's wrong URL would reach (its 404s are HTML pages, its files
/// are whatever they hold).
public final class StaticWebServer: Sendable {
    public let port: Int
    let pid: Int32
    let directory: String
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Starts a server whose files are `files` (path → content) and waits until it answers.
    public static func start(files: [String: String] = [:]) async throws -> StaticWebServer {
        let directory = NSTemporaryDirectory() + "depot-web-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (path, content) in files { try content.write(toFile: directory + "/" + path, atomically: true, encoding: .utf8) }
        let port = try freeLoopbackPort()
        let script = "python3 -m http.server --bind 127.0.0.1 --directory \"$0\" \"$1\" </dev/null >/dev/null 2>&1 & echo $!"
        let output = try await spawn("/bin/sh", ["-c", script, directory, String(port)])
        guard let pid = Int32(String(decoding: output.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandFailed(command: "python3 -m http.server", status: output.status)
        }
        let server = StaticWebServer(port: port, pid: pid, directory: directory)
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if canConnect(port: port) { return server }
            try await Task.sleep(for: .milliseconds(50))
        }
        server.stop()
        throw CommandFailed(command: "python3 -m http.server did not listen on \(port)", status: 1)
    }

    init(port: Int, pid: Int32, directory: String) {
        self.port = port
        self.pid = pid
        self.directory = directory
    }

    public func stop() {
        kill(pid, SIGKILL)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A loopback port nothing listens on now (bound, then closed).
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    return Int(UInt16(bigEndian: address.sin_port))
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
