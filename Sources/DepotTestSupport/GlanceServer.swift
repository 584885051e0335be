import Foundation
import Synchronization

/// A real OpenStack Glance API server on loopback, started with `scripts/glance-dev`.
///
/// Tokens are `USER:PROJECT:ROLES` (the harness's fakeauth mode); Glance's own policy checks
/// decide what each may see, as behind Keystone.
public final class GlanceServer: Sendable {
    public let port: Int
    public let dataDirectory: String
    /// Whether it serves HTTPS.
    public let usesTLS: Bool
    public var url: String { "\(usesTLS ? "https" : "http")://127.0.0.1:\(port)" }

    public static let alice = "alice:projA:member,reader"
    public static let bob = "bob:projB:member,reader"
    public static let admin = "root:admin:admin,member,reader"
    /// A reader of Alice's project: may see its images, not change or download them.
    public static let carol = "carol:projA:reader"

    private static let script = repositoryRoot + "/scripts/glance-dev"
    /// Each suite's server, as the start under way or done: a second test of the suite awaits
    /// the same start.
    /// The start asked for last waits for the one before it.
    private static let servers = Mutex<(bySuite: [String: Task<GlanceServer, any Error>], last: Task<GlanceServer, any Error>?)>(([:], nil))
    /// Those that started, stopped at exit.
    private static let started = Mutex<[GlanceServer]>([])

    /// One server per name (a test suite), started on first use and stopped at process exit.
    ///
    /// Suites run in parallel and Glance keeps its records in SQLite, which answers concurrent
    /// writers with "database is locked" (HTTP 500): so each suite gets a Glance of its own and
    /// serializes its tests.
    ///
    /// - Parameter imageCache: with Glance's own image cache on (see `start`).
    public static func shared(_ name: String = #fileID, imageCache: Bool = false) async throws -> GlanceServer {
        let key = imageCache ? name + "+cache" : name
        let start = servers.withLock { servers in
            if let start = servers.bySuite[key] { return start }
            if servers.bySuite.isEmpty {
                atexit { GlanceServer.started.withLock { $0.forEach { $0.stop() } } }
            }
            // One start at a time, as when a lock was held across each: a dozen suites starting
            // Glance (gunicorn, its SQLite schema) at once load the machine for seconds, and
            // the tests already running miss their deadlines.
            let previous = servers.last
            let start = Task {
                _ = try? await previous?.value
                let server = try await GlanceServer.start(imageCache: imageCache)
                GlanceServer.started.withLock { $0.append(server) }
                return server
            }
            servers.bySuite[key] = start
            servers.last = start
            return start
        }
        return try await start.value
    }

    /// Installs the Glance venv if needed and starts a fresh server with its own data.
    ///
    /// - Parameters:
    ///   - tls: serve HTTPS with these certificates' server certificate.
    ///   - requireClientCertificate: with `tls`, refuse clients without a certificate signed by
    ///     its CA.
    ///   - imageCache: turn Glance's own image cache on (`glance-dev start --cache`: an
    ///     `image_cache_dir`, the `centralized_db` driver, the cache filter), so that its
    ///     `/v2/cache` API answers as a production Glance with a cache does: the reference for
    ///     Depot's.
    ///   - configuration: text appended to glance-api.conf (e.g. an `[image_format]` section).
    public static func start(
        tls: TestCertificates? = nil, requireClientCertificate: Bool = false, imageCache: Bool = false, configuration: String? = nil
    ) async throws -> GlanceServer {
        try await run("/bin/bash", [script, "install"])
        let dir = NSTemporaryDirectory() + "depot-glance-\(UUID().uuidString)"
        var arguments = [script, "start", "--data", dir]
        if imageCache { arguments.append("--cache") }
        if let configuration {
            let path = dir + ".conf"
            try configuration.write(toFile: path, atomically: true, encoding: .utf8)
            arguments += ["--conf", path]
        }
        if let tls {
            arguments += ["--tls-cert", tls.serverCertificate, "--tls-key", tls.serverKey]
            if requireClientCertificate { arguments += ["--tls-client-ca", tls.authority] }
        }
        let output = try await run("/bin/bash", arguments)
        let fields = output.split(whereSeparator: \.isWhitespace)
        guard fields.count == 2, let port = Int(fields[1]) else {
            throw CommandFailed(command: "glance-dev start printed \(output)", status: 1)
        }
        return GlanceServer(port: port, dataDirectory: dir, usesTLS: tls != nil)
    }

    init(port: Int, dataDirectory: String, usesTLS: Bool = false) {
        self.port = port
        self.dataDirectory = dataDirectory
        self.usesTLS = usesTLS
    }

    public func stop() {
        // A test server holds nothing worth a graceful stop: kill its process group at once
        // (gunicorn waits up to 10 s for idle keep-alive connections otherwise). That is the
        // whole stop: `glance-dev stop` would only find the group gone and delete the pid
        // files, which go with the directory; and this runs at exit, where no child process
        // can be awaited.
        if let text = try? String(contentsOfFile: dataDirectory + "/glance-api.pid", encoding: .utf8),
           let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 {
            kill(-pid, SIGKILL)
        }
        // DEPOT_TEST_KEEP_GLANCE=1 keeps the server's data and logs for a post-mortem.
        if ProcessInfo.processInfo.environment["DEPOT_TEST_KEEP_GLANCE"] != "1" {
            try? FileManager.default.removeItem(atPath: dataDirectory)
            try? FileManager.default.removeItem(atPath: dataDirectory + ".conf")
        }
    }

    /// The venv's Python clients (glance CLI, openstacksdk), for acceptance tests.
    public static var venv: String {
        get async { (try? await run("/bin/bash", [script, "env"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? "" }
    }
}

