import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Proxy
import Testing

/// Depot's server in this process, in front of `glanceURL`, with its own data directory.
final class DepotHarness: @unchecked Sendable {
    static let serviceToken = "depot:service:admin,member,reader"
    static let adminToken = "depot-test-admin-token"

    let dir: TemporaryDirectory
    let store: BlobStore
    let catalog: Catalog
    let cache: ImageCache
    let server: HTTPServer
    let task: Task<Void, any Error>
    private var pushTask: Task<Void, Never>?
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    /// - Parameter startPushes: run the push queue at once (else call `startPushes`).
    init(
        glanceURL: String, settings: CacheSettings = .testing, clouds extra: [String: String] = [:], uploads: UploadSettings = .init(),
        startPushes: Bool = true, directory: TemporaryDirectory = TemporaryDirectory("depot-proxy"), limits: ServerLimits = .init(),
        exportDirectory: String? = nil
    ) async throws {
        dir = directory
        store = try BlobStore(dataDirectory: dir.path)
        catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        var clients: [String: GlanceClient] = [:]
        for (name, url) in ["default_RegionOne": glanceURL].merging(extra, uniquingKeysWith: { a, _ in a }) {
            var configuration = GlanceClientConfiguration(endpoint: url, credentials: .token(Self.serviceToken))
            configuration.retryBaseDelay = .milliseconds(20)
            configuration.maxRetries = 2
            clients[name] = GlanceClient(configuration: configuration)
        }
        cache = try ImageCache(store: store, catalog: catalog, clouds: clients, defaultCloud: "default_RegionOne", settings: settings)
        let handler = DepotHandler(cache: cache, uploads: uploads, admin: AdminAccess(token: Self.adminToken), exportDirectory: exportDirectory)
        let server = HTTPServer(host: "127.0.0.1", port: 0, handler: handler, limits: limits, threads: 2)
        self.server = server
        let bound = AsyncStream<Int>.makeStream()
        task = Task { try await server.run { bound.continuation.yield($0) } }
        var iterator = bound.stream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CommandFailed(command: "depot server did not bind", status: 1) }
        self.port = port
        if startPushes { self.startPushes() }
    }

    func startPushes() {
        guard pushTask == nil else { return }
        let queue = cache.pushes
        pushTask = Task { await queue.run() }
    }

    /// Waits until the image's push is no longer pending.
    func settledPush(cloud: String = "default_RegionOne", _ imageID: String, timeout: Duration = .seconds(120)) async throws -> PushRecord {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let push = try catalog.push(cloud: cloud, imageID: imageID), push.state == .done || push.state == .failed { return push }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CommandFailed(command: "push of \(imageID) did not settle within \(timeout)", status: 1)
    }

    func stop() async {
        pushTask?.cancel()
        _ = await pushTask?.value
        server.shutdown()
        task.cancel()
        _ = await task.result
        await server.close()
    }
}

/// What curl saw.
struct CurlResult {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]

    func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// Runs curl (the real client) and returns status, headers (lowercased names) and body.
func curl(_ url: String, token: String? = GlanceServer.alice, _ extra: [String] = []) async throws -> CurlResult {
    let dir = NSTemporaryDirectory() + "depot-curl-\(UUID().uuidString)"
    defer {
        try? FileManager.default.removeItem(atPath: dir + ".h")
        try? FileManager.default.removeItem(atPath: dir + ".b")
    }
    var arguments = ["-s", "-D", dir + ".h", "-o", dir + ".b", "-w", "%{http_code}"]
    if let token { arguments += ["-H", "X-Auth-Token: \(token)"] }
    arguments += extra + [url]
    let result = try await spawn("/usr/bin/curl", arguments)
    let status = Int(String(decoding: result.stdout, as: UTF8.self)) ?? 0
    var headers: [String: String] = [:]
    let headerText = (try? String(contentsOfFile: dir + ".h", encoding: .utf8)) ?? ""
    for line in headerText.split(separator: "\r\n") {
        if line.hasPrefix("HTTP/") { headers = [:]; continue }
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    let body = (try? Data(contentsOf: URL(fileURLWithPath: dir + ".b"))).map { Array($0) } ?? []
    return CurlResult(status: status, headers: headers, body: body)
}

/// A client acting as Alice against Glance directly (to set up images).
func glanceAsAlice(_ url: String) -> GlanceClient {
    GlanceClient(configuration: GlanceClientConfiguration(endpoint: url, credentials: .token(GlanceServer.alice)))
}

/// Flips one byte of an image in Glance's own file store; Glance keeps announcing the old hashes.
func rotStoredByte(_ glance: GlanceServer, imageID: String, at offset: Int, of bytes: [UInt8]) throws {
    let handle = try #require(FileHandle(forUpdatingAtPath: glance.dataDirectory + "/images/" + imageID))
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: [0xFF ^ bytes[offset]])
    try handle.close()
}

/// Creates an active raw image with `bytes`.
func uploadImage(_ client: GlanceClient, _ bytes: [UInt8], visibility: String = "private") async throws -> GlanceImage {
    let image = try await client.createImage([
        "name": .string("proxy-test"), "disk_format": .string("raw"), "container_format": .string("bare"), "visibility": .string(visibility),
    ])
    try await client.uploadImageData(image.id, from: .bytes(bytes))
    return try await client.showImage(image.id)
}

extension CacheSettings {
    /// Quick retries, so tests of failing pushes take seconds.
    static var testing: CacheSettings {
        var settings = CacheSettings()
        settings.push.initialBackoff = .milliseconds(100)
        settings.push.maximumBackoff = .seconds(1)
        // One push at a time per test Depot, as the tests were written for. It was first for
        // Glance's SQLite, which answered concurrent writers with 500s until
        // scripts/glance/sqlite_locking.py.
        settings.push.concurrency = 1
        return settings
    }
}

/// Runs the glance CLI against `endpoint` as `token`, stdin closed (glanceclient reads image
/// data from any other stdin); returns its exit status and output (stdout and stderr).
func glanceCLI(_ endpoint: String, token: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    let command = [GlanceServer.venv + "/bin/glance", "--os-image-url", endpoint, "--os-auth-token", token] + arguments
    let result = try await spawn("/bin/sh", ["-c", "exec \"$0\" \"$@\" <&- 2>&1"] + command)
    return (result.status, String(decoding: result.stdout, as: UTF8.self))
}

/// A blocking TCP connection to 127.0.0.1:`port` (call it off the cooperative pool).
func connectLoopback(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        let code = errno
        close(fd)
        throw CommandFailed(command: "connect to \(port)", status: code)
    }
    return fd
}

/// Writes `bytes` to a socket, stopping early if the peer closes.
func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return }
        offset += n
    }
}
