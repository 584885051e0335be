import Foundation
import Logging
import NIOPosix
import Retry

/// A Glance v2 client over libcurl: image metadata, streaming downloads with resume, streaming
/// uploads, interoperable import; static-token or Keystone v3 auth.
///
/// Every transfer runs on the process's transfer loop (libcurl's multi interface on one thread),
/// never on Swift's cooperative pool. Idempotent requests are retried with exponential backoff
/// and jitter after transient failures; uploads are not retried.
public final class GlanceClient: Sendable {
    public static let version = "0.1.0"

    public let configuration: GlanceClientConfiguration
    let transfers = TransferLoop.shared
    /// Where `download(sink:)` runs its sink (which may block on the disk).
    let blockingPool: NIOThreadPool
    let keystone: KeystoneSession?
    let logger: Logger

    /// - Parameter blockingPool: runs download sinks; the application's bounded pool for
    ///   blocking work (NIO's shared one for tools and tests).
    public init(configuration: GlanceClientConfiguration, logger: Logger = Logger(label: "depot.glance"), blockingPool: NIOThreadPool = .singleton) {
        self.configuration = configuration
        self.logger = logger
        self.blockingPool = blockingPool
        if case let .keystone(credentials) = configuration.credentials {
            keystone = KeystoneSession(credentials: credentials)
        } else {
            keystone = nil
        }
    }

    var limits: TransferLimits {
        TransferLimits(
            connectTimeout: configuration.connectTimeout, stallTimeout: configuration.stallTimeout,
            minimumSpeed: configuration.minimumSpeed, tls: configuration.tls)
    }

    // MARK: Images

    /// `GET /v2/images/{id}`.
    public func showImage(_ id: String, auth: RequestAuth = .service) async throws(GlanceError) -> GlanceImage {
        try await json(GlanceImage.self, method: "GET", path: "/v2/images/\(pathComponent(id))", auth: auth)
    }

    /// `GET /v2/images` with filters (e.g. `name`, `status`, `os_hash_value`), following `next`
    /// links until the last page.
    public func listImages(filters: [(String, String)] = [], pageSize: Int? = nil, auth: RequestAuth = .service) async throws(GlanceError) -> [GlanceImage] {
        var query = filters
        if let pageSize { query.append(("limit", String(pageSize))) }
        var path: String? = "/v2/images" + queryString(query)
        var images: [GlanceImage] = []
        while let current = path {
            let page = try await json(ImagePage.self, method: "GET", path: current, auth: auth)
            images += page.images
            path = page.next
        }
        return images
    }

    /// `POST /v2/images`: creates an image record (status `queued`).
    public func createImage(_ properties: [String: JSONValue], auth: RequestAuth = .service) async throws(GlanceError) -> GlanceImage {
        let body = try encode(properties)
        return try await json(GlanceImage.self, method: "POST", path: "/v2/images", body: body, contentType: "application/json", auth: auth)
    }

    /// `PATCH /v2/images/{id}` with JSON-patch operations.
    ///
    /// - Parameter retryingTransientFailures: retry after a transient failure (a 5xx, 429, a
    ///   dropped connection) as a `GET` is retried. Only for patches that may be applied twice
    ///   with the same result (removing a property no image has, say); a PATCH is otherwise not
    ///   retried, since the first may have landed.
    public func updateImage(
        _ id: String, _ patches: [ImagePatch], auth: RequestAuth = .service, retryingTransientFailures: Bool = false
    ) async throws(GlanceError) -> GlanceImage {
        let body = try encode(patches)
        return try await json(
            GlanceImage.self, method: "PATCH", path: "/v2/images/\(pathComponent(id))", body: body,
            contentType: "application/openstack-images-v2.1-json-patch", auth: auth, idempotent: retryingTransientFailures)
    }

    /// `DELETE /v2/images/{id}`.
    public func deleteImage(_ id: String, auth: RequestAuth = .service) async throws(GlanceError) {
        _ = try await send(method: "DELETE", path: "/v2/images/\(pathComponent(id))", auth: auth)
    }

    /// `POST /v2/images/{id}/import`: imports staged data (`glance-direct`) or copies to stores.
    public func importImage(_ id: String, method: String = "glance-direct", auth: RequestAuth = .service) async throws(GlanceError) {
        let body = try encode(["method": ["name": method]])
        _ = try await send(method: "POST", path: "/v2/images/\(pathComponent(id))/import", body: body, contentType: "application/json", auth: auth)
    }

    /// The id of the store Glance writes uploaded data to: the one `GET /v2/info/stores`
    /// marks as default. Nil when Glance has a single store and no stores API (it answers 400
    /// or 404 then); such a Glance sets no `stores` on images.
    public func defaultStoreID(auth: RequestAuth = .service) async throws(GlanceError) -> String? {
        struct Stores: Decodable {
            struct Store: Decodable {
                var id: String
                var isDefault: Bool
                enum CodingKeys: String, CodingKey { case id, isDefault = "default" }
                init(from decoder: any Decoder) throws {
                    let container = try decoder.container(keyedBy: CodingKeys.self)
                    id = try container.decode(String.self, forKey: .id)
                    // Glance 33 sends "true" as a string; older ones a boolean.
                    isDefault = (try? container.decode(Bool.self, forKey: .isDefault))
                        ?? ((try? container.decode(String.self, forKey: .isDefault))?.lowercased() == "true")
                }
            }
            var stores: [Store]
        }
        do {
            return try await json(Stores.self, method: "GET", path: "/v2/info/stores", auth: auth).stores.first { $0.isDefault }?.id
        } catch where error.status == 400 || error.status == 404 {
            return nil
        }
    }

    // MARK: Uploads

    /// `PUT /v2/images/{id}/file`: uploads image data (the image becomes active).
    public func uploadImageData(_ id: String, from source: UploadSource, auth: RequestAuth = .service) async throws(GlanceError) {
        try await upload(path: "/v2/images/\(pathComponent(id))/file", source: source, auth: auth)
    }

    /// `PUT /v2/images/{id}/stage`: stages data for a later `importImage`.
    public func stageImageData(_ id: String, from source: UploadSource, auth: RequestAuth = .service) async throws(GlanceError) {
        try await upload(path: "/v2/images/\(pathComponent(id))/stage", source: source, auth: auth)
    }

    // MARK: Request machinery

    struct ImagePage: Decodable {
        var images: [GlanceImage]
        var next: String?
    }

    /// Sends a request and decodes a JSON answer.
    func json<T: Decodable>(
        _ type: T.Type, method: String, path: String, body: [UInt8]? = nil, contentType: String? = nil, auth: RequestAuth, idempotent: Bool? = nil
    ) async throws(GlanceError) -> T {
        let (_, bytes, url) = try await send(method: method, path: path, body: body, contentType: contentType, auth: auth, idempotent: idempotent)
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw .invalidResponse(reason: "cannot decode \(T.self): \(error)", url: url)
        }
    }

    /// Sends a request with a small body and collects the answer; retries idempotent methods
    /// after transient failures, and re-authenticates once when a Keystone token was refused.
    ///
    /// - Parameter idempotent: whether the request may be sent again after a transient failure;
    ///   nil decides by the method (`GET`, `HEAD` and `DELETE` are; RFC 9110, section 9.2.2).
    func send(
        method: String, path: String, body: [UInt8]? = nil, contentType: String? = nil, auth: RequestAuth, idempotent: Bool? = nil
    ) async throws(GlanceError) -> (HTTPResponseHead, [UInt8], String) {
        let idempotent = idempotent ?? ["GET", "HEAD", "DELETE"].contains(method)
        var attempt = 0
        var reauthenticated = false
        while true {
            let target = try await resolve(auth)
            let url = target.endpoint + path
            var request = HTTPRequest(method: method, url: url, headers: target.headers, totalTimeout: configuration.requestTimeout)
            request.headers.append(("Accept", "application/json"))
            if let body {
                request.body = .bytes(body)
                if let contentType { request.headers.append(("Content-Type", contentType)) }
            }
            let outcome = await perform(request)
            switch outcome {
            case let .success((head, bytes)) where head.status < 300:
                return (head, bytes, url)
            case let .success((head, bytes)):
                let error = GlanceError.http(status: head.status, message: GlanceError.message(fromBody: bytes), method: method, url: url)
                if head.status == 401, auth == .service, let keystone, !reauthenticated {
                    reauthenticated = true
                    await keystone.invalidate(token: target.token)
                    continue
                }
                try await retryOrThrow(error, attempt: &attempt, idempotent: idempotent)
            case let .failure(failure):
                let error = glanceError(failure, method: method, url: url)
                try await retryOrThrow(error, attempt: &attempt, idempotent: idempotent)
            }
        }
    }

    /// Sleeps before the next attempt, or throws when the error is final.
    func retryOrThrow(_ error: GlanceError, attempt: inout Int, idempotent: Bool) async throws(GlanceError) {
        guard idempotent, error.isTransient, attempt < configuration.maxRetries else { throw error }
        let delay = backoff(attempt: attempt)
        attempt += 1
        logger.info("retrying after transient failure", metadata: ["error": "\(error)", "attempt": "\(attempt)", "delay": "\(delay)"])
        do { try await Task.sleep(for: delay) } catch { throw .cancelled }
    }

    /// The wait before retry `attempt` (0 for the first): exponential, capped, with jitter
    /// between half and all of the step.
    func backoff(attempt: Int) -> Duration {
        Backoff(initial: configuration.retryBaseDelay, maximum: configuration.retryMaxDelay).delay(afterFailures: attempt + 1)
    }

    /// Runs one exchange, keeping the whole answer in memory (metadata, uploads' answers).
    func perform(
        _ request: HTTPRequest, feeding produce: UploadProducer? = nil
    ) async -> Result<(HTTPResponseHead, [UInt8]), TransportFailure> {
        let transfer = transfers.start(request, limits: limits, handling: .collect)
        if let produce { transfer.feedRequestBody(produce) }
        switch await transfer.opened() {
        case let .complete(head, body): return .success((head, body))
        case let .failed(failure): return .failure(failure)
        case let .streaming(head): return .success((head, []))  // never for `.collect`
        }
    }

    /// The endpoint and auth headers for a request.
    struct Target: Sendable {
        var endpoint: String
        var headers: [(String, String)]
        var token: String?
    }

    func resolve(_ auth: RequestAuth) async throws(GlanceError) -> Target {
        var token: String?
        var catalogEndpoint: String?
        switch auth {
        case let .token(callerToken):
            token = callerToken
        case .service:
            switch configuration.credentials {
            case .none: break
            case let .token(serviceToken): token = serviceToken
            case .keystone:
                let session = try await keystone!.current(using: self)
                token = session.token
                catalogEndpoint = session.imageEndpoint
            }
        }
        var endpoint = configuration.endpoint
        if endpoint == nil, let keystone {
            endpoint = try await keystone.current(using: self).imageEndpoint
        }
        guard let endpoint = endpoint ?? catalogEndpoint else {
            throw .authentication(reason: "no Glance endpoint configured and none found in the Keystone catalog")
        }
        return Target(endpoint: endpoint, headers: token.map { [("X-Auth-Token", $0)] } ?? [], token: token)
    }

    func glanceError(_ failure: TransportFailure, method: String, url: String) -> GlanceError {
        Self.glanceError(failure, method: method, url: url)
    }

    static func glanceError(_ failure: TransportFailure, method: String, url: String) -> GlanceError {
        switch failure {
        case let .curl(code, message): .transport(message: message, method: method, url: url, curlCode: code)
        case let .stalled(seconds): .stalled(seconds: seconds, url: url)
        case .cancelled: .cancelled
        case let .rejected(error): (error as? GlanceError) ?? .invalidResponse(reason: "\(error)", url: url)
        case let .requestBody(error): .requestBody(reason: "\(error)", url: url)
        }
    }

    func encode(_ value: some Encodable) throws(GlanceError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(value)) } catch {
            throw .invalidResponse(reason: "cannot encode request: \(error)", url: "")
        }
    }
}

/// Percent-encodes one path segment, so an id can never add segments or a query.
func pathComponent(_ segment: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove(charactersIn: "/?#%;")
    return segment.addingPercentEncoding(withAllowedCharacters: allowed) ?? segment
}

func queryString(_ items: [(String, String)]) -> String {
    guard !items.isEmpty else { return "" }
    var allowed = CharacterSet.urlQueryAllowed
    allowed.remove(charactersIn: "&=+?#")
    return "?" + items.map { name, value in
        (name.addingPercentEncoding(withAllowedCharacters: allowed) ?? name) + "="
            + (value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)
    }.joined(separator: "&")
}
