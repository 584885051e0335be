import BlobStore
import Cache
import Foundation
import Glance
import HTTPCore
import HTTPSemantics
import Logging
import Metrics
import NIOCore
import NIOHTTP1

/// Answers Depot's HTTP API (see `Router` for its URL space): image data from the cache,
/// uploads, the admin and Multicloud APIs; everything else is passed to Glance.
public struct DepotHandler: RequestHandler, FastPathResponder {
    let cache: ImageCache
    let uploads: UploadSettings
    let admin: AdminAccess
    /// Renders `/metrics` (Prometheus text); nil answers 404.
    let metrics: (@Sendable () -> [UInt8])?
    let logger: Logger
    /// One line per request (`depot.access`), written in batches by `AccessLogService`.
    public let accessLog: AccessLog
    /// The ONAP routes' token → project answers.
    let projects: TokenProjects
    /// Where the ONAP route may write images (`multicloud.export_dir`); nil: nowhere.
    let exportDirectory: ExportDirectory?
    /// Where each request goes.
    let router: Router
    /// The request metrics of hits answered on the event loop.
    let fastPathMetrics = FastPathMetrics()

    public init(
        cache: ImageCache, uploads: UploadSettings = .init(), admin: AdminAccess = .init(), metrics: (@Sendable () -> [UInt8])? = nil,
        exportDirectory: String? = nil, logger: Logger = Logger(label: "depot.proxy")
    ) {
        self.cache = cache
        self.uploads = uploads
        self.admin = admin
        self.metrics = metrics
        self.projects = TokenProjects(ttl: cache.settings.decisionTTL)
        self.exportDirectory = exportDirectory.map(ExportDirectory.init(path:))
        self.router = Router(defaultCloud: cache.defaultCloud, clouds: cache.clouds.keys)
        self.logger = logger
        self.accessLog = AccessLog(enabled: Logger(label: "depot.access").logLevel <= .info)
    }

    func route(_ request: Request) -> Router.Route { router.route(uri: request.uri) }

    public func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse? {
        guard case let .imageFile(cloud, imageID, _) = router.route(uri: head.uri),
              let (representationRequest, token) = RepresentationRequest.read(head), let token,
              let known = cache.knownHit(token: token, fingerprint: TokenMemo.fingerprint(of: token, in: &memo), cloud: cloud, imageID: imageID)
        else { return nil }
        let hit = KnownImageHit(
            kept: known.derived.value { KeptRepresentation(Representation(image: known.image)) }, digest: known.digest, validity: known.validity,
            request: representationRequest, method: head.method, version: head.version, uri: head.uri)
        return answer(hit, plan: ResponsePlan(representationRequest, for: hit.kept.representation), allocator: allocator)
    }

    /// Answers a connection's request that repeats its last one but for the range, from what
    /// was decided for that one, while `ImageCache.stillKnown` says it stands.
    public func repeatedResponse(to earlier: AnyObject, range: UnsafeRawBufferPointer?, allocator: ByteBufferAllocator) -> ImmediateResponse? {
        guard let hit = earlier as? KnownImageHit, let validity = hit.validity, cache.stillKnown(validity) else { return nil }
        return answer(hit, plan: ResponsePlan(hit.request, range: range, for: hit.kept.representation), allocator: allocator)
    }

    /// A hit on the event loop: `plan`, made for the image `hit` is about, from its blob.
    private func answer(_ hit: KnownImageHit, plan: ResponsePlan, allocator: ByteBufferAllocator) -> ImmediateResponse? {
        let representation = hit.kept.representation
        // A blob that does not match its record is left to the async path to quarantine.
        guard let reader = cache.beginHit(hit.digest, size: representation.size) else { return nil }
        let response = HitResponse(
            plan: plan, version: hit.version, reader: reader, allocator: allocator, wireHead: true,
            representationFields: hit.kept.fields)
        let started = NIODeadline.now()
        let (status, bodyBytes) = (response.status.code, response.bodyBytes)
        return ImmediateResponse(response, repeatable: hit.validity == nil ? nil : hit) { [cache, accessLog, fastPathMetrics] in
            cache.endRead(hit.digest)
            // The event-loop path has no Request: log and count it here.
            cache.statistics.record(.hit, bytes: bodyBytes)
            let nanoseconds = (NIODeadline.now() - started).nanoseconds
            fastPathMetrics.record(status: status, nanoseconds: nanoseconds)
            if accessLog.enabled {
                accessLog.recordHit(method: hit.method.rawValue, path: hit.logPath, status: status, bytes: UInt64(bodyBytes), nanoseconds: nanoseconds)
            }
        }
    }

    /// What a hit on the event loop decided about its request's image, kept for the
    /// connection's next request when that repeats it but for the range
    /// (`FastPathResponder.repeatedResponse`): the head's method, version and target, its other
    /// fields (in `request`), the token's decision and the blob are then the same.
    final class KnownImageHit: Sendable {
        let kept: KeptRepresentation
        let digest: Digest
        /// How long the decision and the image's blob stand (nil: not past this request).
        let validity: KnownHitValidity?
        /// The representation request of the head, with its range.
        let request: RepresentationRequest
        let method: HTTPMethod
        let version: HTTPVersion
        /// The target without its query, for the access log (`Router.pathPart`).
        let logPath: Substring

        init(
            kept: KeptRepresentation, digest: Digest, validity: KnownHitValidity?, request: RepresentationRequest, method: HTTPMethod, version: HTTPVersion,
            uri: String
        ) {
            self.kept = kept
            self.digest = digest
            self.validity = validity
            self.request = request
            self.method = method
            self.version = version
            logPath = Router.pathPart(Substring(uri))
        }
    }

    /// An image record's representation, kept with its decision (`DecisionMemo`): its entity
    /// tag and fields cost about 3,000 instructions to read and build per hit, and writing its
    /// head fields one by one about 1,500 more.
    final class KeptRepresentation: Sendable {
        let representation: Representation
        /// `ResponsePlan.representationFields(representation)` in wire form.
        let fields: [UInt8]

        init(_ representation: Representation) {
            self.representation = representation
            fields = ByteBuffer.encodedFields(ResponsePlan.representationFields(representation))
        }
    }

    /// The token a connection's requests carried last, and its fingerprint: a client sends
    /// the same token with every request, and the connection's memo ends with it, so no table
    /// outlives the connection holding a token (the decisions are keyed by fingerprint).
    final class TokenMemo {
        let token: String
        let fingerprint: SecretFingerprint

        init(_ token: String) {
            self.token = token
            fingerprint = SecretFingerprint(token)
        }

        /// `SecretFingerprint(token)`, kept in `memo` for the connection's next request.
        static func fingerprint(of token: String, in memo: inout FastPathMemo) -> SecretFingerprint {
            if let kept = memo.value as? TokenMemo, sameBytes(kept.token, token) { return kept.fingerprint }
            let made = TokenMemo(token)
            memo.value = made
            return made.fingerprint
        }

        /// Byte for byte, as the fingerprint hashes them (and Keystone compares tokens):
        /// `String`'s `==` also calls canonically equivalent texts equal (`é` as one scalar or
        /// as `e` and a combining accent), which are two different tokens. In a time that does
        /// not depend on where they differ: a connection a balancer shares between clients
        /// compares one client's token with another's.
        static func sameBytes(_ a: String, _ b: String) -> Bool {
            // `withUTF8` reads a native string's bytes in place (it copies only one that is not
            // contiguous UTF-8), so one loop serves every string.
            var a = a, b = b
            return a.withUTF8 { x in
                b.withUTF8 { y in
                    guard x.count == y.count else { return false }
                    var difference: UInt8 = 0
                    for i in 0..<x.count { difference |= x[i] ^ y[i] }
                    return difference == 0
                }
            }
        }
    }

    /// The handler's logger with the request's id on every line.
    func requestLogger(_ request: Request) -> Logger {
        var logger = logger
        logger[metadataKey: "request"] = "\(request.id)"
        return logger
    }

    /// One access-log line per request, the request metrics, and the cache statistics.
    public func responded(_ request: Request, _ response: ResponseWriter, duration: Duration) {
        let status = response.status.map { Int($0.code) } ?? 0
        let route = route(request).label
        if request.method == .GET || request.method == .HEAD, route == "image_file" || route == "multicloud" || route == "multicloud_vio",
           let result = response.cacheResult.flatMap(CacheStatistics.Result.init(rawValue:)), (200..<300).contains(status) {
            cache.statistics.record(result, bytes: Int(response.bytesWritten))
        }
        Counter(label: "depot_http_requests_total", dimensions: [("route", route), ("status", String(status))]).increment()
        Timer(label: "depot_http_request_duration_seconds", dimensions: [("route", route)]).record(duration: duration)
        accessLog.record(
            "\(request.method.rawValue) \(request.path) \(status)",
            metadata: [
                "bytes": "\(response.bytesWritten)", "cache": response.cacheResult ?? "-", "duration_ms": AccessLog.milliseconds(duration),
                "request": "\(request.id)",
            ])
    }

    public func handle(_ request: Request, _ response: ResponseWriter) async {
        switch route(request) {
        case let .admin(route):
            await AdminResponder(cache: cache, access: admin, logger: requestLogger(request)).respond(request, response, route: route)
        case .metrics:
            if let metrics {
                await response.send(.ok, headers: ["content-type": "text/plain; version=0.0.4"], body: response.allocator.buffer(bytes: metrics()))
            } else {
                await response.sendError(.notFound, "metrics are not enabled in this process")
            }
        case let .multicloud(route):
            await MulticloudResponder(cache: cache, uploads: uploads, logger: requestLogger(request)).respond(request, response, route: route)
        case let .multicloudVIO(route):
            await MulticloudVIOResponder(cache: cache, uploads: uploads, projects: projects, export: exportDirectory, logger: requestLogger(request))
                .respond(request, response, route: route)
        case .health:
            await response.sendJSON(.ok, ["status": "ok"])
        case .readiness:
            await readiness(response)
        case let .notFound(message, closesConnection):
            await response.sendError(.notFound, message, headers: closesConnection ? ["connection": "close"] : [:])
        case let .invalid(message):
            await response.sendError(.badRequest, message)
        case let .versions(cloud, prefix):
            await versions(request, response, cloud: cloud, prefix: prefix)
        case let .imageFile(cloud, imageID, pathAndQuery):
            switch request.method {
            case .GET, .HEAD:
                let passThrough: @Sendable () async -> Void = { await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery) }
                await ImageFileResponder(cache: cache, logger: requestLogger(request), passThrough: passThrough)
                    .respond(request, response, cloud: cloud, imageID: imageID)
            case .PUT:
                await UploadResponder(cache: cache, settings: uploads, logger: requestLogger(request)).respond(request, response, cloud: cloud, imageID: imageID, method: .upload)
            default:
                await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery)
            }
        case let .imageStage(cloud, imageID, pathAndQuery):
            if request.method == .PUT {
                await UploadResponder(cache: cache, settings: uploads, logger: logger).respond(
                    request, response, cloud: cloud, imageID: imageID, method: .glanceDirect)
            } else {
                await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery)
            }
        case let .imageImport(cloud, imageID, pathAndQuery):
            await importImage(request, response, cloud: cloud, imageID: imageID, pathAndQuery: pathAndQuery)
        case let .forward(cloud, pathAndQuery):
            await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery)
        }
    }
}
