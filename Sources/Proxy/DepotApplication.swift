import BlobStore
import Cache
import Catalog
import Foundation
import Glance
import HTTPCore
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Depot wired once: the clouds' clients, the cache, the HTTP handler and server, and the
/// services that run beside them. `depot serve` and the tests build the same application; they
/// differ only in their `Configuration` and in which services they run.
///
/// The caller opens the data directory (`BlobStore`, `Catalog`): `depot serve` checks and locks
/// it first, and says what to fix when it cannot.
public final class DepotApplication: Sendable {
    /// Everything that differs between one Depot and another.
    public struct Configuration: Sendable {
        /// One configured cloud: its name (`{owner}_{region}`) and how to reach its Glance.
        public struct Cloud: Sendable {
            public var name: String
            public var client: GlanceClientConfiguration

            public init(name: String, client: GlanceClientConfiguration) {
                self.name = name
                self.client = client
            }
        }

        /// Where to listen; port 0 picks a free one.
        public var host = "127.0.0.1"
        public var port = 9494
        /// The first is the default cloud (`/v2/…` without `/clouds/`).
        public var clouds: [Cloud]
        public var cache = CacheSettings()
        public var uploads = UploadSettings()
        public var admin = AdminAccess()
        public var limits = ServerLimits()
        /// The listener's TLS; nil serves plain HTTP.
        public var tls: NIOSSLContext?
        /// `multicloud.export_dir`; nil: the ONAP export route writes nowhere.
        public var exportDirectory: String?
        /// Event-loop threads.
        public var threads = System.coreCount
        /// The background scrub (`scrub.rate` in bytes per second, `scrub.interval`); nil: none.
        public var scrub: (bytesPerSecond: UInt64, interval: Duration)?
        /// Probe the backends for `depot_backend_up`.
        public var probeBackends = true

        public init(clouds: [Cloud]) { self.clouds = clouds }
    }

    public let configuration: Configuration
    public let store: BlobStore
    public let catalog: Catalog
    /// Each cloud's Glance client, by cloud name.
    public let clients: [String: GlanceClient]
    public let cache: ImageCache
    public let handler: DepotHandler
    public let server: HTTPServer
    /// Blocking disk work (writes, hashing, fsync, commits) and the download sinks; stopped
    /// by `close()`, after the services.
    public let disk: DiskPools

    /// - Parameter metrics: renders `/metrics` (Prometheus text) for this cache; nil answers 404.
    /// - Throws: what `ImageCache` throws when it cannot read the Catalog.
    public init(
        _ configuration: Configuration, store: BlobStore, catalog: Catalog, metrics: (@Sendable (ImageCache) -> [UInt8])? = nil
    ) throws {
        precondition(!configuration.clouds.isEmpty, "a Depot serves at least one cloud")
        self.configuration = configuration
        self.store = store
        self.catalog = catalog
        let disk = DiskPools()
        disk.start()
        self.disk = disk
        var clients: [String: GlanceClient] = [:]
        for cloud in configuration.clouds where clients[cloud.name] == nil {
            clients[cloud.name] = GlanceClient(configuration: cloud.client, blockingPool: disk.requests)
        }
        self.clients = clients
        let cache: ImageCache
        do {
            cache = try ImageCache(
                store: store, catalog: catalog, clouds: clients, defaultCloud: configuration.clouds[0].name, settings: configuration.cache,
                disk: disk)
        } catch {
            Task { await disk.shutdown() }
            throw error
        }
        self.cache = cache
        var renderMetrics: (@Sendable () -> [UInt8])?
        if let metrics { renderMetrics = { metrics(cache) } }
        handler = DepotHandler(
            cache: cache, uploads: configuration.uploads, admin: configuration.admin, metrics: renderMetrics,
            exportDirectory: configuration.exportDirectory)
        server = HTTPServer(
            host: configuration.host, port: configuration.port, handler: handler, tls: configuration.tls, limits: configuration.limits,
            threads: configuration.threads)
    }

    /// The services to run in a `ServiceGroup`: the cache's background work (fills, digest
    /// passes, the hit flush), the HTTP server (calling `onBound` with its port once it
    /// listens), the push queue when `pushes`, the scrub and the backend probe when configured.
    public func services(pushes: Bool = true, onBound: @escaping @Sendable (Int) -> Void = { _ in }) -> [any Service] {
        // Background work first, so it is shut down last: fills feed the transfers the server
        // lets finish.
        // The access log before the server, so it is shut down after it: the last requests' lines
        // are written.
        var services: [any Service] = [
            BackgroundWorkService(work: cache.background), AccessLogService(log: handler.accessLog), HTTPService(server: server, onBound: onBound),
        ]
        if pushes { services.append(PushService(queue: cache.pushes)) }
        if let scrub = configuration.scrub {
            services.append(ScrubService(scrubber: Scrubber(cache: cache, bytesPerSecond: scrub.bytesPerSecond, interval: scrub.interval)))
        }
        if configuration.probeBackends { services.append(BackendProbeService(probe: BackendProbe(clouds: clients))) }
        return services
    }

    /// Frees the server's event loops; call once the services have returned.
    public func close() async {
        await server.close()
        // Lines of requests ended by the close, when the access log's service ran before them
        // or never ran (a start-up failure).
        handler.accessLog.flush()
        await disk.shutdown()
    }
}

/// Runs the HTTP server as a service: graceful shutdown stops accepting and lets transfers end;
/// cancellation closes the connections still open.
public struct HTTPService: Service {
    let server: HTTPServer
    let onBound: @Sendable (Int) -> Void

    public func run() async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await server.run(onBound: onBound)
            } onGracefulShutdown: {
                server.shutdown()
            }
        } onCancel: {
            server.closeAllConnections()
        }
    }
}

/// Runs the push queue until shutdown; a push cut short resumes at the next start.
public struct PushService: Service {
    let queue: PushQueue

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await queue.run()
        }
    }
}

/// Runs the cache's background work (fills, digest passes, the hit flush) until shutdown.
public struct BackgroundWorkService: Service {
    let work: BackgroundWork

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await work.run()
        }
    }
}

/// Runs the background scrub until shutdown.
public struct ScrubService: Service {
    let scrubber: Scrubber

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await scrubber.run()
        }
    }
}

/// Probes the backends for `depot_backend_up` until shutdown.
public struct BackendProbeService: Service {
    let probe: BackendProbe

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await probe.run()
        }
    }
}
