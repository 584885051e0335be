import Foundation

/// A Keystone v3 token and the image endpoint from its catalog.
struct KeystoneToken: Sendable {
    var token: String
    var expiresAt: Date?
    var imageEndpoint: String?
}

/// Authenticates Depot's service identity with Keystone and caches the token until shortly
/// before it expires (or until Glance refuses it).
actor KeystoneSession {
    let credentials: KeystoneCredentials
    private var cached: KeystoneToken?
    /// Re-authenticate this long before Keystone's expiry, so no request carries a dying token.
    static let refreshMargin: TimeInterval = 120

    init(credentials: KeystoneCredentials) { self.credentials = credentials }

    func current(using client: GlanceClient) async throws(GlanceError) -> KeystoneToken {
        if let cached, cached.expiresAt.map({ $0.timeIntervalSinceNow > Self.refreshMargin }) ?? true {
            return cached
        }
        let fresh = try await authenticate(using: client)
        cached = fresh
        return fresh
    }

    /// Forgets a token Glance refused, so the next call authenticates again.
    func invalidate(token: String?) {
        if cached?.token == token { cached = nil }
    }

    private func authenticate(using client: GlanceClient) async throws(GlanceError) -> KeystoneToken {
        let url = credentials.authURL + "/auth/tokens"
        var request = HTTPRequest(method: "POST", url: url, totalTimeout: client.configuration.requestTimeout)
        request.headers = [("Content-Type", "application/json"), ("Accept", "application/json")]
        request.body = .bytes(Array(try client.encode(requestBody())))
        let outcome = await client.perform(request)
        let head: HTTPResponseHead, body: [UInt8]
        switch outcome {
        case let .success(answer): (head, body) = answer
        case let .failure(failure): throw client.glanceError(failure, method: "POST", url: url)
        }
        guard head.status == 201 || head.status == 200 else {
            throw .authentication(reason: "Keystone answered \(head.status): \(GlanceError.message(fromBody: body))")
        }
        guard let token = head.header("X-Subject-Token") else {
            throw .authentication(reason: "Keystone's answer has no X-Subject-Token")
        }
        let decoded: TokenResponse
        do { decoded = try JSONDecoder().decode(TokenResponse.self, from: Data(body)) } catch {
            throw .authentication(reason: "cannot read Keystone's token body: \(error)")
        }
        let endpoint = decoded.token.catalog?
            .first { $0.type == "image" }?
            .endpoints.first { $0.interface == credentials.interface && (credentials.region == nil || $0.region_id == credentials.region || $0.region == credentials.region) }?
            .url
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let expiry = decoded.token.expires_at.flatMap { formatter.date(from: $0) ?? ISO8601DateFormatter().date(from: $0) }
        return KeystoneToken(token: token, expiresAt: expiry, imageEndpoint: endpoint.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 })
    }

    private func requestBody() -> JSONValue {
        let identity: JSONValue
        var scope: JSONValue?
        switch credentials.method {
        case let .password(username, password, userDomain, project, projectDomain):
            identity = .object([
                "methods": .array([.string("password")]),
                "password": .object(["user": .object([
                    "name": .string(username), "password": .string(password),
                    "domain": .object(["name": .string(userDomain)]),
                ])]),
            ])
            scope = .object(["project": .object(["name": .string(project), "domain": .object(["name": .string(projectDomain)])])])
        case let .applicationCredential(id, secret):
            // An application credential carries its own scope.
            identity = .object([
                "methods": .array([.string("application_credential")]),
                "application_credential": .object(["id": .string(id), "secret": .string(secret)]),
            ])
        }
        var auth: [String: JSONValue] = ["identity": identity]
        if let scope { auth["scope"] = scope }
        return .object(["auth": .object(auth)])
    }

    private struct TokenResponse: Decodable {
        struct Token: Decodable {
            var expires_at: String?
            var catalog: [Service]?
        }
        struct Service: Decodable {
            var type: String
            var endpoints: [Endpoint]
        }
        struct Endpoint: Decodable {
            var url: String
            var interface: String
            var region: String?
            var region_id: String?
        }
        var token: Token
    }
}

extension GlanceClient {
    /// The roles of a user's token, as Keystone validates it with Depot's service token; nil
    /// when this cloud has no Keystone (static service token), empty for an invalid token.
    public func tokenRoles(_ userToken: String) async throws(GlanceError) -> Set<String>? {
        guard let (status, body) = try await validateWithKeystone(userToken) else { return nil }
        guard status == 200 else { return [] }
        let decoded = try? JSONDecoder().decode(ValidatedToken.self, from: Data(body))
        return Set(decoded?.token.roles?.map(\.name) ?? [])
    }

    /// Keystone's validation of a user's token (`GET /v3/auth/tokens`, with Depot's service
    /// token): its status and body; nil when this cloud has no Keystone.
    func validateWithKeystone(_ userToken: String) async throws(GlanceError) -> (status: Int, body: [UInt8])? {
        guard let keystone else { return nil }
        let service = try await keystone.current(using: self)
        let url = keystone.credentials.authURL + "/auth/tokens"
        var request = HTTPRequest(method: "GET", url: url, totalTimeout: configuration.requestTimeout)
        request.headers = [("X-Auth-Token", service.token), ("X-Subject-Token", userToken), ("Accept", "application/json")]
        switch await perform(request) {
        case let .success((head, body)): return (head.status, body)
        case let .failure(failure): throw glanceError(failure, method: "GET", url: url)
        }
    }
}

private struct ValidatedToken: Decodable {
    struct Token: Decodable {
        struct Role: Decodable { var name: String }
        var roles: [Role]?
    }

    var token: Token
}
