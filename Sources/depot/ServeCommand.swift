import ArgumentParser
import BlobStore
import CFileIO
import Cache
import Catalog
import DepotConfig
import Eviction
import FormatInspector
import Foundation
import Glance
import Logging
import Metrics
import NIOCore
import NIOSSL
import HTTPCore
import Prometheus
import Proxy
import ServiceLifecycle

/// `depot serve`: the cache and proxy.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the Glance v2 API from the cache, fetching from the backend Glance on a miss.",
        discussion: "Flags override the config file; config/depot.example.yaml documents every key.")

    /// What applies when neither a flag nor the config file says otherwise (shown in --help).
    static let defaults = DepotConfiguration()

    @Option(help: "The config file (YAML); flags override its keys. Default: none.") var config: String?
    @Option(help: "Where to listen, HOST:PORT (port 0 picks a free one). Default: \(defaults.listenHost):\(defaults.listenPort) (listen:).")
    var listen: String?
    @Option(
        name: .customLong("data-dir"),
        help: "The data directory (blobs/, tmp/, catalog.sqlite, depot.lock). Default: ./\(defaults.dataDirectory) (data_dir:).")
    var dataDir: String?
    @Option(name: .customLong("glance-url"), help: "The default cloud's Glance endpoint, without /v2, e.g. http://glance:9292. Required unless the config file has clouds:.")
    var glanceURL: String?
    @Option(name: .customLong("service-token"), help: "A static token for Depot's own calls to Glance. Default: none (clouds[].service_token or keystone:).")
    var serviceToken: String?
    @Option(name: .customLong("cloud-owner"), help: "Owner of the cloud given by --glance-url. Default: \(DepotConfiguration.CloudConfiguration().owner).")
    var cloudOwner: String?
    @Option(name: .customLong("cloud-region"), help: "Region of the cloud given by --glance-url. Default: \(DepotConfiguration.CloudConfiguration().region).")
    var cloudRegion: String?
    @Option(name: .customLong("cache-size"), help: "Disk budget for blobs, e.g. 20GiB. Default: no budget, blobs stay until evicted (cache.size:).")
    var cacheSize: String?
    @Option(name: .customLong("admin-token"), help: "Token for the admin APIs (/depot/v1, /v2/cache). Default: none, only Keystone admins (admin_token:).")
    var adminToken: String?
    @Option(
        name: .customLong("upload-mode"),
        help: "write-back (acknowledge once durable here) or write-through (once Glance has it). Default: \(defaults.uploadMode) (upload_mode:).")
    var uploadMode: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical. Default: \(defaults.logLevel) (log_level:).")
    var logLevel: String?
    @Option(name: .customLong("tls-certificate"), help: "Serve HTTPS with this certificate chain (PEM); needs --tls-key. Default: plain HTTP (tls.certificate:).")
    var tlsCertificate: String?
    @Option(name: .customLong("tls-key"), help: "The private key (PEM) of --tls-certificate (tls.key:).") var tlsKey: String?

    /// The config file with the flags applied.
    func effectiveConfiguration() throws -> DepotConfiguration {
        var settings = try config.map { path throws(ConfigurationError) in try DepotConfiguration.load(path: path) } ?? DepotConfiguration()
        if let listen {
            guard let (host, port) = parseHostPort(listen) else { throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:9494") }
            (settings.listenHost, settings.listenPort) = (host, port)
        }
        if let dataDir { settings.dataDirectory = dataDir }
        if tlsCertificate != nil || tlsKey != nil {
            guard let tlsCertificate, let tlsKey else { throw ValidationError("--tls-certificate and --tls-key go together") }
            (settings.tlsCertificate, settings.tlsKey) = (tlsCertificate, tlsKey)
        }
        if let logLevel { settings.logLevel = logLevel }
        if let adminToken { settings.adminToken = adminToken }
        if let uploadMode {
            guard uploadMode == "write-back" || uploadMode == "write-through" else { throw ValidationError("--upload-mode must be write-back or write-through") }
            settings.uploadMode = uploadMode
        }
        if let cacheSize {
            guard let bytes = parseSize(cacheSize) else { throw ValidationError("--cache-size must be a size such as 20GiB or 500MB, below 8 EiB") }
            settings.cacheSize = bytes
        }
        if let glanceURL {
            var cloud = DepotConfiguration.CloudConfiguration()
            cloud.glanceURL = glanceURL.hasSuffix("/") ? String(glanceURL.dropLast()) : glanceURL
            cloud.serviceToken = serviceToken
            if let cloudOwner { cloud.owner = cloudOwner }
            if let cloudRegion { cloud.region = cloudRegion }
            settings.clouds.removeAll { $0.name == cloud.name }
            settings.clouds.insert(cloud, at: 0)
        } else if let serviceToken, !settings.clouds.isEmpty {
            settings.clouds[0].serviceToken = serviceToken
        }
        try settings.validate()
        return settings
    }

    func run() async throws {
        // With glibc's default of 8 arenas per core, memory that threads freed stays with the
        // process (a 10-minute soak grew RSS by 50 MiB that malloc_trim gave back, when each
        // transfer had a thread of its own).
        _ = depot_limit_malloc_arenas(4)
        let settings = try effectiveConfiguration()
        guard let level = Logger.Level(rawValue: settings.logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        LogSettings.level.withLock { $0 = level }
        let logger = Logger(label: "depot")

        try checkWritable(settings.dataDirectory)
        // Held until the process exits: one Catalog, one budget and one push queue per directory.
        let lock = try lockDataDirectory(settings.dataDirectory, .exclusive)
        defer { withExtendedLifetime(lock) {} }
        let store = try BlobStore(dataDirectory: settings.dataDirectory)
        let catalog: Catalog
        do { catalog = try Catalog(path: settings.dataDirectory + "/catalog.sqlite") } catch {
            // GRDB writes when it opens a database: an unwritable catalog fails here.
            if "\(error)".contains("readonly") { throw Self.unwritableCatalog(settings.dataDirectory + "/catalog.sqlite", error) }
            throw CLIError("cannot open the catalog in \(settings.dataDirectory): \(error); if it is damaged, move it away and run depot fsck to rebuild it")
        }
        try checkWritable(store: store, catalog: catalog)
        var application = DepotApplication.Configuration(
            clouds: settings.clouds.map { DepotApplication.Configuration.Cloud(name: $0.name, client: clientConfiguration($0)) })
        (application.host, application.port) = (settings.listenHost, settings.listenPort)
        application.cache.decisionTTL = settings.decisionTTL
        application.cache.offlineGrace = settings.offlineGrace
        application.cache.budget = settings.cacheSize.map { Watermarks(budget: $0, high: settings.highWatermark, low: settings.lowWatermark) }
        application.cache.minimumFreeDisk = settings.minimumFreeDisk
        application.cache.push.concurrency = settings.pushConcurrency
        application.cache.push.initialBackoff = settings.pushInitialBackoff
        application.cache.push.maximumBackoff = settings.pushMaximumBackoff
        application.cache.push.landingWait = settings.pushActionWait
        application.cache.maximumFills = settings.maxFills
        application.cache.maximumUploads = settings.maxUploads
        application.uploads.mode = UploadMode(rawValue: settings.uploadMode) ?? .writeBack
        application.uploads.maximumSize = settings.maxUploadSize
        application.uploads.formats = FormatPolicy(
            requireImageFormatMatch: settings.requireImageFormatMatch, gptSafetyChecksNonfatal: Set(settings.gptSafetyChecksNonfatal))
        application.admin = AdminAccess(token: settings.adminToken)
        application.limits.maximumConnections = settings.maxConnections
        application.limits.headerTimeout = TimeAmount(settings.headerTimeout)
        application.limits.idleTimeout = TimeAmount(settings.idleTimeout)
        application.limits.responseWaitTimeout = TimeAmount(settings.responseWaitTimeout)
        application.tls = try tlsContext(settings)
        application.exportDirectory = settings.multicloudExportDirectory
        application.scrub = (settings.scrubRate, settings.scrubInterval)
        // Metrics go to a Prometheus registry that /metrics renders; bootstrapped before the
        // cache, which makes its counters once.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let app = try DepotApplication(application, store: store, catalog: catalog) { cache in
            cache.recordGauges()
            return registry.emitToBuffer()
        }
        app.cache.registerCounters()

        try await checkBackends(app.clients, logger: logger)
        let server = app.server
        let services = app.services { port in
            // One line on stdout, for scripts and tests that asked for port 0.
            let host = server.host.contains(":") ? "[\(server.host)]" : server.host
            FileHandle.standardOutput.write(Data("depot listening on \(server.scheme)://\(host):\(port)\n".utf8))
        }
        var groupConfiguration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // Transfers get this long to finish after SIGTERM/SIGINT; then connections are closed.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(30)
        groupConfiguration.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch {
            await app.close()
            if let error = error as? HTTPServerError { throw CLIError(error.description) }
            throw error
        }
        await app.close()
    }

    /// Checks that each cloud's URL is a Glance (its version document). A URL that is not one
    /// (a wrong path, another service) is a configuration mistake: Depot refuses to start and
    /// says what to give. A backend that does not answer now is not: Depot serves its cache and
    /// reports it in /readyz.
    func checkBackends(_ clients: [String: GlanceClient], logger: Logger) async throws {
        let checks = await withTaskGroup(of: (String, BackendCheck).self) { group in
            for (name, client) in clients { group.addTask { (name, await client.checkBackend()) } }
            var checks: [(String, BackendCheck)] = []
            for await check in group { checks.append(check) }
            return checks.sorted { $0.0 < $1.0 }
        }
        var mistakes: [String] = []
        for (name, check) in checks {
            switch check {
            case let .glance(version):
                logger.info("backend Glance answers", metadata: ["cloud": "\(name)", "version": "\(version)"])
            case let .unavailable(reason):
                logger.warning("backend Glance not reachable yet; cached images are still served", metadata: ["cloud": "\(name)", "error": "\(reason)"])
            case let .misconfigured(message):
                mistakes.append("cloud \(name): \(message)")
            }
        }
        guard mistakes.isEmpty else { throw CLIError("the image service URL is wrong:\n  " + mistakes.joined(separator: "\n  ")) }
    }

    func clientConfiguration(_ cloud: DepotConfiguration.CloudConfiguration) -> GlanceClientConfiguration {
        var credentials = ServiceCredentials.none
        if let token = cloud.serviceToken {
            credentials = .token(token)
        } else if let keystone = cloud.keystone {
            let method: KeystoneCredentials.Method
            if let id = keystone.applicationCredentialID, let secret = keystone.applicationCredentialSecret {
                method = .applicationCredential(id: id, secret: secret)
            } else {
                method = .password(
                    username: keystone.username ?? "", password: keystone.password ?? "", userDomain: keystone.userDomain,
                    project: keystone.project ?? "", projectDomain: keystone.projectDomain)
            }
            credentials = .keystone(KeystoneCredentials(authURL: keystone.authURL, method: method, region: keystone.region ?? cloud.region, interface: keystone.interface))
        }
        var configuration = GlanceClientConfiguration(endpoint: cloud.glanceURL, credentials: credentials)
        configuration.tls = TLSOptions(
            caBundle: cloud.caBundle, clientCertificate: cloud.clientCertificate, clientKey: cloud.clientKey, insecure: cloud.insecure)
        return configuration
    }

    /// The listener's TLS setup from `tls:`; nil serves plain HTTP.
    func tlsContext(_ settings: DepotConfiguration) throws -> NIOSSLContext? {
        guard let certificatePath = settings.tlsCertificate, let keyPath = settings.tlsKey else { return nil }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
            guard !chain.isEmpty else { throw CLIError("\(certificatePath) holds no PEM certificate; give the server certificate (then its intermediates) in PEM") }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
            configuration.applicationProtocols = ["http/1.1"]
            configuration.minimumTLSVersion = .tlsv12
            return try NIOSSLContext(configuration: configuration)
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("cannot use the TLS certificate \(certificatePath) with key \(keyPath): \(error); give PEM files that match (tls.certificate, tls.key)")
        }
    }

    func checkWritable(_ directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CLIError("cannot create the data directory \(directory): \(error.localizedDescription); choose another --data-dir or fix its permissions")
        }
        let probe = directory + "/.depot-write-check"
        guard FileManager.default.createFile(atPath: probe, contents: Data("ok".utf8)) else {
            throw CLIError("cannot write in the data directory \(directory); choose another --data-dir or fix its permissions")
        }
        try? FileManager.default.removeItem(atPath: probe)
    }

    /// Where a first upload or fill would write: `tmp/`, a link into `blobs/`, the Catalog.
    func checkWritable(store: BlobStore, catalog: Catalog) throws {
        do { try store.checkWritable() } catch {
            throw CLIError("cannot write blobs in \(store.root) (tmp/ and blobs/ must be writable by this user, on one filesystem): \(error); fix their ownership or permissions")
        }
        do { try catalog.checkWritable() } catch { throw Self.unwritableCatalog(catalog.path, error) }
    }

    static func unwritableCatalog(_ path: String, _ error: any Error) -> CLIError {
        CLIError("cannot write the catalog \(path): \(error); it and its -wal and -shm files must be writable by this user (a depot fsck run as root leaves them root's): fix their ownership")
    }
}
