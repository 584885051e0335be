import BlobStore
import Cache
import Foundation
import Glance
import HTTPSemantics
import Logging
import Metrics
import NIOCore
import NIOHTTP1

/// Routes Depot's HTTP API: Glance v2 at `/v2/…` (default cloud) and `/clouds/{owner}_{region}/v2/…`,
/// version discovery, health; image data from the cache, everything else passed to Glance.
public struct DepotHandler: RequestHandler, FastPathResponder {
    let cache: ImageCache
    let uploads: UploadSettings
    let admin: AdminAccess
    /// Renders `/metrics` (Prometheus text); nil answers 404.
    let metrics: (@Sendable () -> [UInt8])?
    let logger: Logger
    let accessLogger: Logger
    /// The ONAP routes' token → project answers.
    let projects: TokenProjects
    /// Where the ONAP route may write images (`multicloud.export_dir`); nil: nowhere.
    let exportDirectory: ExportDirectory?
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
        self.logger = logger
        self.accessLogger = Logger(label: "depot.access")
    }

    /// Where a request goes.
    enum Route: Equatable {
        case versions(cloud: String, prefix: String)
        case imageFile(cloud: String, imageID: String, pathAndQuery: String)
        case imageStage(cloud: String, imageID: String, pathAndQuery: String)
        case imageImport(cloud: String, imageID: String, pathAndQuery: String)
        case forward(cloud: String, pathAndQuery: String)
        case multicloud(MulticloudResponder.Route)
        case multicloudVIO(MulticloudVIOResponder.Route)
        case admin(AdminResponder.Route)
        case metrics
        case health
        case readiness
        case notFound(String)
        case invalid(String)
    }

    func route(_ request: Request) -> Route { route(uri: request.uri) }

    /// The path of a request target: up to the first "?". Split on scalars, not Characters:
    /// "?" or "/" followed by a combining mark or ZWJ is one Character, which a Character
    /// split would not split at (libcurl and Glance do), e.g. "/v2/images/../\u{301}x".
    /// Searched as UTF-8 bytes: "?" and "/" are one byte each and never part of another
    /// scalar, so a byte split is the scalar split, at a fraction of the cost on every hit.
    static func pathPart(_ uri: Substring) -> Substring {
        guard let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri }
        return Substring(uri.unicodeScalars[..<mark])
    }

    /// A path's segments, split at every "/" scalar (see `pathPart`).
    static func segments(_ path: Substring, omittingEmpty: Bool = false) -> [Substring] {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: omittingEmpty).map { Substring(path.unicodeScalars[$0.startIndex..<$0.endIndex]) }
    }

    /// Whether a path has a "." or ".." segment. Compared as bytes: no other string is
    /// canonically equivalent to "." or "..", so this is the Character comparison, without
    /// an array of segments on every request.
    static func hasDotSegment(_ path: Substring) -> Bool {
        var dots = 0
        var onlyDots = true
        for byte in path.utf8 {
            if byte == UInt8(ascii: "/") {
                if onlyDots && (dots == 1 || dots == 2) { return true }
                dots = 0
                onlyDots = true
            } else if byte == UInt8(ascii: ".") {
                dots += 1
            } else {
                onlyDots = false
            }
        }
        return onlyDots && (dots == 1 || dots == 2)
    }

    func route(uri fullURI: String) -> Route {
        var uri = Substring(fullURI)
        let rawPath = Self.pathPart(uri)
        // Dot segments would be resolved differently on the way to Glance (libcurl squashes
        // them): refuse them rather than guess which resource was meant.
        if Self.hasDotSegment(rawPath) {
            return .invalid("the path \(rawPath.prefix(200)) has . or .. segments; send the resource's path itself")
        }
        if uri.hasPrefix("/depot/v1/") || uri == "/depot/v1" {
            let path = Self.pathPart(uri)
            return .admin(.depot(rest: Self.segments(path.dropFirst("/depot/v1".count), omittingEmpty: true).map(String.init)))
        }
        if uri == "/metrics" { return .metrics }
        if uri.hasPrefix(MulticloudVIOResponder.prefix) {
            let path = Self.pathPart(uri)
            guard let route = MulticloudVIOResponder.route(path: path) else {
                return .notFound("no route for \(path); the ONAP Multicloud API has {vimid}/{tenantid}/images/file and images/file/{id}")
            }
            return .multicloudVIO(route)
        }
        if uri.hasPrefix(MulticloudResponder.prefix) {
            let path = Self.pathPart(uri)
            guard let route = MulticloudResponder.route(path: path) else {
                return .notFound("no route for \(path); the Multicloud API has images/file, images/file/{id} and images/{id}")
            }
            return .multicloud(route)
        }
        var cloud = cache.defaultCloud
        var prefix = ""
        if uri.hasPrefix("/clouds/") {
            let rest = uri.dropFirst("/clouds/".count)
            let name = rest.prefix { $0 != "/" && $0 != "?" }
            guard !name.isEmpty, cache.clouds[String(name)] != nil else {
                return .notFound("no cloud \(name) here; clouds are named OWNER_REGION, one of: \(cache.clouds.keys.sorted().joined(separator: ", "))")
            }
            cloud = String(name)
            prefix = "/clouds/\(name)"
            uri = rest.dropFirst(name.count)
            if uri.isEmpty { uri = "/" }
        }
        let path = Self.pathPart(uri)
        if path == "/" || path == "/versions" || path == "/v2" || path == "/v2/" {
            return path.hasPrefix("/v2") ? .forward(cloud: cloud, pathAndQuery: String(uri)) : .versions(cloud: cloud, prefix: prefix)
        }
        if prefix.isEmpty && path == "/healthz" { return .health }
        if prefix.isEmpty && path == "/readyz" { return .readiness }
        guard path.hasPrefix("/v2/") else { return .notFound("no route for \(path); Depot serves the Glance v2 API under /v2/") }
        let segments = Self.segments(path)
        if segments.count >= 3, segments[2] == "cache" {
            let rest = segments.dropFirst(3)
            // Glance's router has no route with an empty segment ("/v2/cache/" is 404 there).
            guard !rest.contains(where: \.isEmpty) else {
                return .notFound("no route for \(path); the cache API is /v2/cache, /v2/cache/{image_id}, /v2/cache/nodes/{image_id}, /v2/cache/prune and /v2/cache/clean")
            }
            return .admin(.glanceCache(cloud: cloud, rest: rest.map(String.init)))
        }
        // ["", "v2", "images", ID, "file"]
        if segments.count == 5, segments[2] == "images" {
            let imageID = String(segments[3])
            switch segments[4] {
            case "file": return .imageFile(cloud: cloud, imageID: imageID, pathAndQuery: String(uri))
            case "stage": return .imageStage(cloud: cloud, imageID: imageID, pathAndQuery: String(uri))
            case "import": return .imageImport(cloud: cloud, imageID: imageID, pathAndQuery: String(uri))
            default: break
            }
        }
        return .forward(cloud: cloud, pathAndQuery: String(uri))
    }

    public func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator) -> ImmediateResponse? {
        guard case let .imageFile(cloud, imageID, _) = route(uri: head.uri),
              let representationRequest = RepresentationRequest(head),
              let (image, digest) = cache.knownHit(token: head.headers.first(name: "x-auth-token"), cloud: cloud, imageID: imageID),
              // A blob that does not match its record is left to the async path to quarantine.
              let reader = cache.openForHit(digest, size: image.size ?? 0, quarantineOnMismatch: false),
              let hit = try? HitResponse(
                plan: ResponsePlan(representationRequest, for: Representation(image: image)), version: head.version, reader: reader, allocator: allocator)
        else { return nil }
        cache.touch(digest)
        cache.beginRead(digest)
        let started = ContinuousClock.now
        return ImmediateResponse(hit: hit) { [cache, accessLogger, fastPathMetrics] in
            cache.endRead(digest)
            // The event-loop path has no Request: log and count it here.
            cache.statistics.record(.hit, bytes: hit.bodyBytes)
            let duration = ContinuousClock.now - started
            fastPathMetrics.record(status: hit.status.code, duration: duration)
            accessLogger.info(
                "\(head.method.rawValue) \(Self.pathPart(Substring(head.uri))) \(hit.status.code)",
                metadata: ["bytes": "\(hit.bodyBytes)", "duration_ms": "\(Self.milliseconds(duration))", "cache": "hit", "path": "fast"])
        }
    }

    /// The handler's logger with the request's id on every line.
    func requestLogger(_ request: Request) -> Logger {
        var logger = logger
        logger[metadataKey: "request"] = "\(request.id)"
        return logger
    }

    /// The route's name for metrics (bounded: no ids).
    func routeLabel(_ request: Request) -> String {
        switch route(request) {
        case .versions: "versions"
        case .imageFile: "image_file"
        case .imageStage: "image_stage"
        case .imageImport: "image_import"
        case .forward: "forward"
        case .multicloud: "multicloud"
        case .multicloudVIO: "multicloud_vio"
        case .admin: "admin"
        case .metrics: "metrics"
        case .health: "health"
        case .readiness: "readiness"
        case .notFound: "not_found"
        case .invalid: "invalid"
        }
    }

    /// One access-log line per request, the request metrics, and the cache statistics.
    public func responded(_ request: Request, _ response: ResponseWriter, duration: Duration) {
        let status = response.status.map { Int($0.code) } ?? 0
        let route = routeLabel(request)
        if request.method == .GET || request.method == .HEAD, route == "image_file" || route == "multicloud" || route == "multicloud_vio",
           let result = response.cacheResult.flatMap(CacheStatistics.Result.init(rawValue:)), (200..<300).contains(status) {
            cache.statistics.record(result, bytes: Int(response.bytesWritten))
        }
        Counter(label: "depot_http_requests_total", dimensions: [("route", route), ("status", String(status))]).increment()
        Timer(label: "depot_http_request_duration_seconds", dimensions: [("route", route)]).record(duration: duration)
        accessLogger.info(
            "\(request.method.rawValue) \(request.path) \(status)",
            metadata: [
                "request": "\(request.id)", "bytes": "\(response.bytesWritten)", "duration_ms": "\(Self.milliseconds(duration))",
                "cache": "\(response.cacheResult ?? "-")",
            ])
    }

    /// Milliseconds with one decimal, rounded half up (what `String(format: "%.1f")` printed,
    /// without Foundation's formatter on every request).
    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0, seconds < Int64.max / 10_000 else {
            return String(format: "%.1f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
        }
        let tenths = seconds * 10_000 + (attoseconds + 50_000_000_000_000) / 100_000_000_000_000
        return "\(tenths / 10).\(tenths % 10)"
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
        case let .notFound(message):
            await response.sendError(.notFound, message)
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

    // MARK: Readiness

    /// Ready when the store is writable and the Catalog answers. Backends are reported per
    /// cloud (a Glance version document, or what is wrong: see `BackendCheck`) but do not make
    /// Depot unready: it serves cached images through an outage.
    func readiness(_ response: ResponseWriter) async {
        var report: [String: Any] = [:]
        var ready = true
        do {
            try cache.store.checkWritable()
            report["store"] = "writable"
        } catch {
            report["store"] = "\(error)"
            ready = false
        }
        do {
            try cache.catalog.ping()
            report["catalog"] = "open"
        } catch {
            report["catalog"] = "\(error)"
            ready = false
        }
        report["clouds"] = await withTaskGroup(of: (String, String).self) { group in
            for (name, client) in cache.clouds {
                group.addTask { (name, await client.checkBackend(timeout: .seconds(5)).summary) }
            }
            var clouds: [String: String] = [:]
            for await (name, summary) in group { clouds[name] = summary }
            return clouds
        }
        report["status"] = ready ? "ready" : "not ready"
        await response.sendJSON(ready ? .ok : .serviceUnavailable, report)
    }

    // MARK: Versions

    /// Glance's version document with its links pointing at Depot, so clients discover Depot as
    /// their image endpoint.
    func versions(_ request: Request, _ response: ResponseWriter, cloud: String, prefix: String) async {
        let host = request.headers.first(name: "host") ?? "localhost"
        let base = "http://\(host)\(prefix)"
        var document: [String: Any] = ["versions": [[String: Any]]()]
        do {
            let client = try cache.client(for: cloud)
            let answer = try await client.forward(method: "GET", pathAndQuery: "/versions", headers: [], body: nil)
            var bytes: [UInt8] = []
            for try await chunk in answer.body { bytes += chunk }
            if let parsed = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] { document = parsed }
        } catch {
            logger.warning("version discovery from the backend failed; answering with v2 only", metadata: ["error": "\(error)"])
            document = ["versions": [["id": "v2.0", "status": "CURRENT", "links": [["rel": "self", "href": "\(base)/v2/"]]]]]
        }
        if var list = document["versions"] as? [[String: Any]] {
            // Depot serves Glance's cache API (v2.14: list/queue/delete/clear, v2.16: nodes,
            // v2.18: clean/prune) whether or not the backend has a cache; clients look for them.
            let known = Set(list.compactMap { $0["id"] as? String })
            for id in ["v2.14", "v2.16", "v2.18"] where !known.contains(id) {
                list.append(["id": id, "status": "SUPPORTED"])
            }
            for index in list.indices {
                let id = (list[index]["id"] as? String) ?? "v2"
                let major = id.split(separator: ".").first.map(String.init) ?? "v2"
                list[index]["links"] = [["rel": "self", "href": "\(base)/\(major)/"]]
            }
            document["versions"] = list
        }
        // Glance answers its root with 300 Multiple Choices and /versions with 200.
        let status: HTTPResponseStatus = request.path.hasSuffix("/versions") ? .ok : .multipleChoices
        await response.sendJSON(status, document)
    }

    // MARK: Import

    /// `POST /v2/images/{id}/import`: data staged through Depot is pushed to Glance's staging
    /// and imported there by the push queue; anything else goes to Glance as sent.
    func importImage(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String, pathAndQuery: String) async {
        var body: [UInt8] = []
        guard await response.continueIfExpected(request) else { return }
        do {
            while let chunk = try await request.body.next() {
                body += chunk.readableBytesView
                guard body.count <= 1 << 20 else {
                    await response.sendError(.payloadTooLarge, "an import request is a small JSON document", headers: ["connection": "close"])
                    return
                }
            }
        } catch {
            response.abort()
            return
        }
        let methodName = ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any])
            .flatMap { $0["method"] as? [String: Any] }.flatMap { $0["name"] as? String }
        if request.method == .POST, methodName == "glance-direct", (try? cache.catalog.push(cloud: cloud, imageID: imageID))??.state == .staged {
            // The caller must be allowed to import: Glance decides, with the caller's token,
            // on the same probe as uploads.
            do {
                _ = try await cache.authorizeImport(token: request.headers.first(name: "x-auth-token"), cloud: cloud, imageID: imageID)
                _ = try cache.importStaged(cloud: cloud, imageID: imageID)
                await response.send(.accepted, headers: ["content-type": "text/html; charset=UTF-8"], body: response.allocator.buffer(string: ""))
            } catch let error as UploadError {
                if case let .refused(status, message) = error { await response.sendError(HTTPResponseStatus(statusCode: status), message) }
                else { await response.sendError(.badRequest, error.description) }
            } catch {
                await response.sendError(.serviceUnavailable, "\(error)")
            }
            return
        }
        await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery, bodyBytes: body)
    }

    // MARK: Forwarding

    /// Passes a request to the backend unchanged (headers, token, body streamed) and its answer
    /// back unchanged. A delete or deactivation seen on the way drops the image from the cache.
    func forward(_ request: Request, _ response: ResponseWriter, cloud: String, pathAndQuery: String, bodyBytes: [UInt8]? = nil) async {
        let client: GlanceClient
        do { client = try cache.client(for: cloud) } catch {
            await response.sendError(.notFound, "\(error)")
            return
        }
        // libcurl negotiates its own 100-continue with the backend.
        var headers = request.headers.filter { $0.name.lowercased() != "expect" }.map { ($0.name, $0.value) }
        if carriesAdminTokenToSchemas(request, pathAndQuery: pathAndQuery) {
            // Schemas are the same for every caller, and glanceclient fetches them before any
            // command (`glance --os-auth-token ADMIN_TOKEN cache-list`); Glance does not know
            // Depot's admin token, so Depot's own credentials ask for them.
            headers.removeAll { $0.0.lowercased() == "x-auth-token" }
            do {
                if let token = try await client.serviceToken() { headers.append(("X-Auth-Token", token)) }
            } catch {
                await response.sendError(.serviceUnavailable, "cannot get Depot's service token for cloud \(cloud) (\(error)); retry later")
                return
            }
        }
        let imageRequest = Self.imageRequest(method: request.method, pathAndQuery: pathAndQuery)
        guard await landOwedBytes(imageRequest, cloud: cloud, response: response) else { return }
        var body: UploadSource?
        if let bodyBytes {
            body = .bytes(bodyBytes)
        } else if !request.body.isEmpty {
            guard await response.continueIfExpected(request) else { return }
            let requestBody = request.body
            body = .producer(length: requestBody.declaredLength) { emit in
                while let chunk = try await requestBody.next() {
                    guard await emit(Array(chunk.readableBytesView)) else { return }
                }
            }
        }
        let answer: ForwardedResponse
        do {
            answer = try await client.forward(method: request.method.rawValue, pathAndQuery: pathAndQuery, headers: headers, body: body)
        } catch {
            logger.warning("backend unreachable", metadata: ["cloud": "\(cloud)", "error": "\(error)"])
            await response.sendError(.serviceUnavailable, "the image service of cloud \(cloud) is unreachable (\(error)); retry later")
            return
        }
        noteChanges(method: request.method, pathAndQuery: pathAndQuery, status: answer.head.status, cloud: cloud)
        var headersOut = HTTPHeaders(answer.head.headers.map { ($0.name, $0.value) })
        if request.method == .HEAD { headersOut.remove(name: "transfer-encoding") }
        do {
            if let rewritten = try await acknowledgedBody(imageRequest, cloud: cloud, pathAndQuery: pathAndQuery, headers: headers, answer: answer) {
                headersOut.remove(name: "transfer-encoding")
                headersOut.replaceOrAdd(name: "content-length", value: String(rewritten.count))
                try await response.head(HTTPResponseStatus(statusCode: answer.head.status), headersOut)
                try await response.body(response.allocator.buffer(bytes: rewritten))
                try await response.end()
                return
            }
            try await response.head(HTTPResponseStatus(statusCode: answer.head.status), headersOut)
            for try await chunk in answer.body {
                try await response.body(response.allocator.buffer(bytes: chunk))
            }
            try await response.end()
        } catch {
            response.abort()
        }
    }

    /// Whether a request for Glance's schemas (`/v2/schemas…`) carries Depot's own admin token.
    func carriesAdminTokenToSchemas(_ request: Request, pathAndQuery: String) -> Bool {
        let path = Self.pathPart(Substring(pathAndQuery))
        guard path == "/v2/schemas" || path.hasPrefix("/v2/schemas/"), let adminToken = admin.token, !adminToken.isEmpty,
              let token = request.headers.first(name: "x-auth-token")
        else { return false }
        return AdminResponder.constantTimeEquals(token, adminToken)
    }

    /// Drops cached knowledge of an image that Glance just deleted or deactivated.
    func noteChanges(method: HTTPMethod, pathAndQuery: String, status: Int, cloud: String) {
        guard (200..<300).contains(status) else { return }
        let path = pathAndQuery.split(separator: "?").first ?? ""
        let segments = path.split(separator: "/")
        // /v2/images/{id}  or  /v2/images/{id}/actions/deactivate
        if method == .DELETE, segments.count == 3, segments[1] == "images" {
            cache.cancelOwedBytes(cloud: cloud, imageID: String(segments[2]))
            cache.forget(cloud: cloud, imageID: String(segments[2]))
        } else if method == .POST, segments.count == 5, segments[1] == "images", segments[3] == "actions", segments[4] == "deactivate" {
            cache.forget(cloud: cloud, imageID: String(segments[2]))
        }
    }
}
