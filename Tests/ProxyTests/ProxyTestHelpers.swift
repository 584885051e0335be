import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import Glance
import HTTPCore
import Logging
import Proxy
import ServiceLifecycle
import Synchronization
import Testing

/// Depot in this process, in front of `glanceURL`, with its own data directory: built as
/// `depot serve` builds it (`DepotApplication`), on a free loopback port. Use it through
/// `withDepot { depot in … }`, which stops it, awaited, however the body ends.
final class DepotHarness: @unchecked Sendable {
    static let serviceToken = "depot:service:admin,member,reader"
    static let adminToken = "depot-test-admin-token"

    let dir: TemporaryDirectory
    let app: DepotApplication
    var store: BlobStore { app.store }
    var catalog: Catalog { app.catalog }
    var cache: ImageCache { app.cache }
    var server: HTTPServer { app.server }
    private let task: Task<Void, any Error>
    /// The push queue of a harness made with `startPushes: false`, once started.
    private var pushTask: Task<Void, Never>?
    private let pushesInGroup: Bool
    private var stopped = false
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    /// - Parameter startPushes: run the push queue at once (else call `startPushes`).
    init(
        glanceURL: String, settings: CacheSettings = .testing, clouds extra: [String: String] = [:], uploads: UploadSettings = .init(),
        startPushes: Bool = true, directory: TemporaryDirectory = TemporaryDirectory("depot-proxy"), limits: ServerLimits = .init(),
        exportDirectory: String? = nil
    ) async throws {
        dir = directory
        let store = try BlobStore(dataDirectory: dir.path)
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        let urls = [("default_RegionOne", glanceURL)] + extra.filter { $0.key != "default_RegionOne" }.sorted { $0.key < $1.key }
        var configuration = DepotApplication.Configuration(
            clouds: urls.map { name, url in
                var client = GlanceClientConfiguration(endpoint: url, credentials: .token(Self.serviceToken))
                client.retryBaseDelay = .milliseconds(20)
                client.maxRetries = 2
                return DepotApplication.Configuration.Cloud(name: name, client: client)
            })
        configuration.port = 0
        configuration.threads = 2
        configuration.cache = settings
        configuration.uploads = uploads
        configuration.admin = AdminAccess(token: Self.adminToken)
        configuration.limits = limits
        configuration.exportDirectory = exportDirectory
        configuration.probeBackends = false
        let app = try DepotApplication(configuration, store: store, catalog: catalog)
        let bound = AsyncStream<Int>.makeStream()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: app.services(pushes: startPushes) { bound.continuation.yield($0) }, logger: Logger(label: "depot.test")))
        let task = Task {
            // A server that cannot listen ends the stream: the harness fails instead of waiting.
            defer { bound.continuation.finish() }
            try await group.run()
        }
        var iterator = bound.stream.makeAsyncIterator()
        guard let port = await iterator.next() else {
            _ = await task.result
            await app.close()
            throw CommandFailed(command: "depot server did not bind", status: 1)
        }
        self.app = app
        self.task = task
        self.port = port
        pushesInGroup = startPushes
    }

    /// Starts the push queue of a harness made with `startPushes: false`; `stop` ends it.
    func startPushes() {
        guard !pushesInGroup, pushTask == nil else { return }
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

    /// Stops the services (open connections are closed, the push queue is cancelled) and frees
    /// the event loops. Once; later calls return at once.
    func stop() async {
        guard !stopped else { return }
        stopped = true
        pushTask?.cancel()
        _ = await pushTask?.value
        task.cancel()
        _ = await task.result
        await app.close()
    }
}

/// Runs `body` with a Depot in this process (see `DepotHarness.init` for the parameters) and
/// stops it, awaited, when `body` returns or throws: the next test never meets this one's
/// server, event loops or push queue.
func withDepot(
    glanceURL: String, settings: CacheSettings = .testing, clouds: [String: String] = [:], uploads: UploadSettings = .init(),
    startPushes: Bool = true, directory: TemporaryDirectory = TemporaryDirectory("depot-proxy"), limits: ServerLimits = .init(),
    exportDirectory: String? = nil, _ body: (DepotHarness) async throws -> Void
) async throws {
    let depot = try await DepotHarness(
        glanceURL: glanceURL, settings: settings, clouds: clouds, uploads: uploads, startPushes: startPushes, directory: directory, limits: limits,
        exportDirectory: exportDirectory)
    do {
        try await body(depot)
    } catch {
        await depot.stop()
        throw error
    }
    await depot.stop()
}

/// What curl saw.
struct CurlResult {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]
    /// curl's exit status: 0 when the answer arrived whole (18: the body ended before its
    /// Content-Length or chunked end; 56: reset; 28: timeout; 7: refused; 35/60: TLS).
    let exit: Int32
    /// curl's own error message, if any.
    let error: String

    func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// curl ended otherwise than the test expected: a status alone says nothing of a body cut short.
struct CurlFailed: Error, CustomStringConvertible {
    let url: String
    let expected: Int32
    let result: CurlResult
    var description: String {
        "curl \(url) exited \(result.exit), expected \(expected) (http \(result.status), \(result.body.count) body bytes): \(result.error)"
    }
}

/// Runs curl (the real client) and returns status, headers (lowercased names), body and exit.
///
/// - Parameter expectingExit: the exit status the test expects, 0 (a whole answer) unless it
///   says otherwise; any other throws `CurlFailed`.
func curl(_ url: String, token: String? = GlanceServer.alice, _ extra: [String] = [], expectingExit: Int32 = 0) async throws -> CurlResult {
    let dir = TemporaryDirectory("depot-curl")
    var arguments = ["-sS", "--stderr", dir.path + "/stderr", "-D", dir.path + "/head", "-o", dir.path + "/body", "-w", "%{http_code}"]
    if let token { arguments += ["-H", "X-Auth-Token: \(token)"] }
    arguments += extra + [url]
    let run = try await spawn("/usr/bin/curl", arguments)
    let result = CurlResult(
        status: Int(String(decoding: run.stdout, as: UTF8.self)) ?? 0,
        headers: parseHeaderBlock((try? String(contentsOfFile: dir.path + "/head", encoding: .utf8)) ?? ""),
        body: (try? Data(contentsOf: URL(fileURLWithPath: dir.path + "/body"))).map { Array($0) } ?? [],
        exit: run.status,
        error: ((try? String(contentsOfFile: dir.path + "/stderr", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
    guard result.exit == expectingExit else { throw CurlFailed(url: url, expected: expectingExit, result: result) }
    return result
}

/// Polls a condition every `interval` until it holds (or fails the test after `timeout`): for
/// what a test must wait on, instead of a guessed sleep that a loaded machine outlasts.
func waitUntil(_ what: String, timeout: Duration = .seconds(60), interval: Duration = .milliseconds(100), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    Issue.record("timed out waiting until \(what)")
}

/// PUTs an image's data to the reference Glance and returns its answer, sending the upload
/// again when Glance's answer was lost.
///
/// Glance refuses some uploads after reading only their start (a format's safety check, a
/// missing `disk_format`) and closes the connection; curl, still sending, can then fail with
/// exit 55 (broken pipe) before it reads the answer. A clean-clone run saw that under the full
/// suite's load. The answer, not that race, is what the tests compare, so the upload goes again
/// (at most 4 tries in all): a refused upload leaves the image queued.
func putToReferenceGlance(_ url: String, _ extra: [String]) async throws -> CurlResult {
    var attempt = 1
    while true {
        do {
            return try await curl(url, ["-X", "PUT"] + extra)
        } catch let failed as CurlFailed where failed.result.exit == 55 && attempt < 4 {
            try await Task.sleep(for: .milliseconds(100 * attempt))
            attempt += 1
        }
    }
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
///
/// Each run has a fresh home: glanceclient caches the image schemas in ~/.glanceclient and
/// skips fetching them when they are there, so a run must not depend on what an earlier one
/// (or another user of the machine) left.
func glanceCLI(_ endpoint: String, token: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    let home = TemporaryDirectory("depot-glanceclient-home")
    let command = [home.path, await GlanceServer.venv + "/bin/glance", "--os-image-url", endpoint, "--os-auth-token", token] + arguments
    let script = "HOME=\"$0\" XDG_CACHE_HOME=\"$0/.cache\" exec \"$@\" <&- 2>&1"
    let result = try await spawn("/bin/sh", ["-c", script] + command)
    withExtendedLifetime(home) {}
    return (result.status, String(decoding: result.stdout, as: UTF8.self))
}

/// A blocking TCP connection to 127.0.0.1:`port` (call it off the cooperative pool).
///
/// - Parameter receiveBuffer: SO_RCVBUF in bytes, set before connecting so that the window
///   offered to the server stays that small.
func connectLoopback(port: Int, receiveBuffer: Int32? = nil) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
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

/// Reads from `fd` until the peer closes (or resets) or `deadline` passes; returns the bytes
/// and whether the peer closed. Blocks: call it off the cooperative pool.
func readUntilClosed(_ fd: Int32, deadline: ContinuousClock.Instant) -> (bytes: [UInt8], closed: Bool) {
    receive(fd, deadline: deadline, stopAfterOneResponse: false)
}

/// Reads one whole response (head and `content-length` bytes of body) of a kept-alive
/// connection, or what arrived before it closed or the deadline passed.
func readOneResponse(_ fd: Int32, deadline: ContinuousClock.Instant) -> (bytes: [UInt8], closed: Bool) {
    receive(fd, deadline: deadline, stopAfterOneResponse: true)
}

private func receive(_ fd: Int32, deadline: ContinuousClock.Instant, stopAfterOneResponse: Bool) -> (bytes: [UInt8], closed: Bool) {
    var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while ContinuousClock.now < deadline {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return (received, true) }
        if n > 0 { received += buffer[..<n] }
        if stopAfterOneResponse, let end = received.firstRange(of: Array("\r\n\r\n".utf8)) {
            let head = String(decoding: received[..<end.lowerBound], as: UTF8.self).lowercased()
            let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            if received.count - end.upperBound >= length { return (received, false) }
        }
    }
    return (received, false)
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

/// An image's record read straight from Glance by curl as Glance's admin (who sees every
/// project's images), parsed by Foundation: what Glance holds, read by no Depot code.
func glanceRecord(_ glanceURL: String, _ imageID: String) async throws -> [String: Any] {
    let answer = try await curl("\(glanceURL)/v2/images/\(imageID)", token: GlanceServer.admin)
    guard answer.status == 200, let record = try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any] else {
        throw CommandFailed(command: "GET \(glanceURL)/v2/images/\(imageID) answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))", status: 1)
    }
    return record
}

/// Checks that Glance itself holds the bytes of the file at `path` as `imageID`: active, of the
/// file's size, with an `os_hash_value` equal to the SHA-512 that coreutils computes from the
/// file. A push Depot calls done proves nothing by itself.
func expectGlanceHolds(
    _ glanceURL: String, _ imageID: String, bytesOf path: String, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let record = try await glanceRecord(glanceURL, imageID)
    let sha512 = try await coreutilsDigest("sha512sum", of: path)
    let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, sourceLocation: sourceLocation)
    #expect(record["status"] as? String == "active", "Glance's status: \(record["status"] ?? "none")", sourceLocation: sourceLocation)
    #expect(record["size"] as? Int == size, "Glance's size: \(record["size"] ?? "none"), the file's: \(size)", sourceLocation: sourceLocation)
    #expect(record["os_hash_algo"] as? String == "sha512", sourceLocation: sourceLocation)
    #expect(record["os_hash_value"] as? String == sha512, "Glance's os_hash_value is not the file's SHA-512", sourceLocation: sourceLocation)
}

/// The GETs of an image's file that reached the backend through `proxy`, other than Depot's
/// one-byte permission probes (`Range: bytes=0-0`, asked with the user's token): the fetches
/// of the image's bytes.
func imageFetches(_ proxy: FaultProxy, _ imageID: String) -> [RecordedRequest] {
    proxy.requests.filter { isImageFetch($0, imageID) }
}

/// Whether a request Depot sent through a `FaultProxy` asks Glance for an image's data, not
/// for the one byte of the download check: what a fill or a backend stream fetches.
@Sendable func isImageFetch(_ request: RecordedRequest, _ imageID: String) -> Bool {
    request.method == "GET" && request.path == "/v2/images/\(imageID)/file" && request.header("range") != "bytes=0-0"
}

/// Sends a request whose body stops short of its Content-Length, ends its side of the
/// connection (a TCP half-close: the body can never be completed, and the answer can still
/// come back) and returns what Depot answered before it closed.
func sendTruncatedBody(port: Int, path: String, declared: Int, sent: Int) async throws -> (answer: String, closed: Bool) {
    try await offThePool {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        let head = "PUT \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: \(GlanceServer.alice)\r\nContent-Type: application/octet-stream\r\nContent-Length: \(declared)\r\n\r\n"
        sendAll(fd, Array(head.utf8) + pseudoRandomBytes(count: sent, seed: 99))
        // Give Depot a moment to authorize and start reading before the body ends.
        usleep(300_000)
        shutdown(fd, Int32(SHUT_WR))
        let answer = readUntilClosed(fd, deadline: .now + .seconds(10))
        return (String(decoding: answer.bytes, as: UTF8.self), answer.closed)
    }
}

/// The Catalog's write lock, held by another process (as another writer, or a slow disk's WAL
/// sync, holds it) until `release`.
struct CatalogLock {
    let process: ChildProcess
    /// When the lock was taken. A test's waits are measured from here: a stalled cooperative
    /// pool would delay the test's own later clock readings too.
    let taken: ContinuousClock.Instant
    /// How long a test lets its work reach the lock, well inside the lock's 10 s busy timeout.
    var deadline: ContinuousClock.Instant { taken + .seconds(6) }

    /// Records an issue when 8 s have passed since the lock was taken: a request answered
    /// later waited for the lock (Depot's busy timeout, 10 s, would have ended the waits first).
    func expectNoRequestWaited(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(ContinuousClock.now - taken < .seconds(8), "a request waited for the Catalog's lock (its timeout is 10 s)", sourceLocation: sourceLocation)
    }

    init(_ depot: DepotHarness) async throws {
        process = try await ChildProcess.start([
            "/usr/bin/python3", "-c",
            """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
            db.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            sys.stdin.readline()
            db.execute("COMMIT")
            """,
            depot.dir.path + "/catalog.sqlite",
        ], stdin: [])
        guard await process.nextLine() == "locked" else { throw CatalogLockFailed(path: depot.dir.path + "/catalog.sqlite") }
        taken = ContinuousClock.now
    }

    func release() async throws {
        try await process.write(Array("\n".utf8))
        _ = await process.wait()
    }
}

struct CatalogLockFailed: Error, CustomStringConvertible {
    let path: String
    var description: String { "python3 did not take the write lock of \(path) (is python3 with its sqlite3 module installed?)" }
}

/// Requests answered so far, counted by the tasks that sent them.
final class AnswerCount: Sendable {
    let count = Atomic<Int>(0)

    /// Sends `request` from a task of its own that counts it once it ends, answered or failed.
    func start<T: Sendable>(_ request: @escaping @Sendable () async throws -> T) -> Task<T, any Error> {
        Task {
            defer { count.add(1, ordering: .relaxed) }
            return try await request()
        }
    }
}
