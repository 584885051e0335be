import Foundation

/// What a backend URL turned out to be, judged by its version document
/// (`GET {endpoint}/versions`, which Glance answers without a token).
public enum BackendCheck: Sendable, Equatable {
    /// A Glance serving image API v2; `version` is its CURRENT version id, e.g. `v2.17`.
    case glance(version: String)
    /// The URL is not a Glance endpoint (a wrong path, another service): a configuration
    /// mistake that waiting will not fix. The message says what is wrong and what to give.
    case misconfigured(String)
    /// No usable answer now (refused, timed out, 5xx): it may come back; Depot serves its cache.
    case unavailable(String)

    /// One line for `/readyz` and the log.
    public var summary: String {
        switch self {
        case .glance: "reachable"
        case let .misconfigured(message): "not an image service: \(message)"
        case let .unavailable(message): "unreachable: \(message)"
        }
    }
}

extension GlanceClient {
    /// Asks the backend for its version document and judges the answer (see `BackendCheck`).
    ///
    /// - Parameter timeout: the whole exchange's limit; an answer later than this is
    ///   `.unavailable`.
    public func checkBackend(timeout: Duration = .seconds(10)) async -> BackendCheck {
        let endpoint: String
        do { endpoint = try await resolveEndpoint() } catch {
            return .unavailable("cannot find the image endpoint: \(error)")
        }
        if let mistake = Self.pathMistake(endpoint) { return .misconfigured(mistake) }
        let url = endpoint + "/versions"
        var request = HTTPRequest(method: "GET", url: url, totalTimeout: timeout)
        request.headers = [("Accept", "application/json")]
        switch await perform(request) {
        case let .success((head, body)):
            return Self.judgeVersionDocument(
                status: head.status, contentType: head.header("content-type"), body: body, url: url)
        case let .failure(failure):
            return .unavailable("\(glanceError(failure, method: "GET", url: url))")
        }
    }

    /// The mistake in an endpoint's path that no answer can excuse: a version suffix such as
    /// `/v2` (Depot adds `/v2/…` itself). Nil when the path may be right.
    public static func pathMistake(_ endpoint: String) -> String? {
        guard let components = URLComponents(string: endpoint), let scheme = components.scheme, components.host != nil else {
            return "\(endpoint) is not an http(s) URL; give Glance's endpoint, e.g. http://glance.example:9292"
        }
        guard scheme == "http" || scheme == "https" else {
            return "\(endpoint) is a \(scheme) URL; give Glance's http(s) endpoint, e.g. http://glance.example:9292"
        }
        var path = components.path
        while path.hasSuffix("/") { path.removeLast() }
        guard let last = path.split(separator: "/").last, last.wholeMatch(of: /v[0-9]+(\.[0-9]+)?/) != nil else { return nil }
        var fixed = components
        fixed.path = String(path.dropLast(last.count + 1))
        fixed.query = nil
        return "the URL \(endpoint) ends in /\(last); give the endpoint without it (\(fixed.string ?? endpoint))"
    }

    /// Judges an answer to `GET …/versions`. Glance answers 200 with
    /// `{"versions": [{"id": "v2.17", "status": "CURRENT", "links": […]}, …]}`, and 300 with the
    /// same document when the path before `/versions` is one it does not know (its version
    /// negotiation, `glance/api/middleware/version_negotiation.py`).
    static func judgeVersionDocument(status: Int, contentType: String?, body: [UInt8], url: String) -> BackendCheck {
        let kind = (contentType ?? "no content type").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if [408, 429].contains(status) || status >= 500 {
            return .unavailable("\(url) answered \(status); Depot serves cached images until it recovers")
        }
        if status >= 400 {
            let text = GlanceError.message(fromBody: body)
            let said = text.isEmpty ? "" : " (\"\(text.prefix(120))\")"
            let with = kind.contains("html") ? "with HTML" : "with \(kind)"
            return .misconfigured(
                "\(url) answered \(status) \(with)\(said): not an image service; give Glance's endpoint, e.g. http://glance.example:9292")
        }
        guard let document = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            return .misconfigured("\(url) answered \(status) with \(kind), not JSON: not an image service; give Glance's endpoint, e.g. http://glance.example:9292")
        }
        guard let versions = document["versions"] as? [[String: Any]] else {
            return .misconfigured("\(url) answered JSON without a list of versions: not an image service (Keystone's URL?); give Glance's endpoint")
        }
        let ids = versions.compactMap { $0["id"] as? String }
        let v2 = versions.filter { ($0["id"] as? String)?.wholeMatch(of: /v2(\.[0-9]+)?/) != nil && $0["status"] is String }
        guard !v2.isEmpty else {
            return .misconfigured("\(url) lists no image API v2 (versions: \(ids.joined(separator: ", "))); Depot needs Glance's v2 API")
        }
        if status == 300 {
            // The version document's links name the endpoint Glance expects.
            let href = versions.lazy.compactMap { (($0["links"] as? [[String: Any]])?.first?["href"] as? String) }.first
            let endpoint = href.map { $0.replacingOccurrences(of: "/v2/?$", with: "", options: .regularExpression) }
            let hint = endpoint.map { "give the endpoint its links name (\($0))" } ?? "give the endpoint without the extra path"
            return .misconfigured("\(url) answered 300 Multiple Choices: Glance does not know the path before /versions; \(hint)")
        }
        let current = v2.first { ($0["status"] as? String)?.uppercased() == "CURRENT" } ?? v2[0]
        return .glance(version: current["id"] as? String ?? "v2")
    }
}
