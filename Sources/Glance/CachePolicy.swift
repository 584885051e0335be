import Foundation

/// What Glance's own policy says of a token for its cache API.
public enum CachePolicyAnswer: Sendable, Equatable {
    /// The token passes `cache_list` (by default `rule:context_is_admin`, the admin role).
    case allowed
    /// Glance knows the token and refuses it the cache API (403).
    case refused
    /// Glance does not accept the token at all (401), with its message.
    case unauthenticated(String)
    /// Glance answered something that does not decide (an older Glance without `/v2/cache`).
    case undecided(String)
    /// No answer (unreachable, 5xx).
    case unavailable(String)
}

extension GlanceClient {
    /// Asks Glance whether a token may use its cache API: `GET /v2/cache` with that token.
    ///
    /// Glance 33's `CacheController._enforce` (`glance/api/v2/cached_images.py`) checks the
    /// policy before it checks that its own cache is enabled, so a Glance without a cache still
    /// decides: 403 for a token the policy refuses, 404 "Caching via API is not supported at
    /// this site." for one it allows, 200 when its cache is on. The call reads and changes
    /// nothing, whatever the backend's cache.
    public func cachePolicy(token: String) async -> CachePolicyAnswer {
        do {
            _ = try await send(method: "GET", path: "/v2/cache", auth: .token(token))
            return .allowed
        } catch {
            switch error {
            case let .http(401, message, _, _): return .unauthenticated(message)
            case .http(403, _, _, _): return .refused
            case let .http(404, message, _, _) where message.contains("Caching via API is not supported"): return .allowed
            case let .http(status, message, _, _) where !error.isTransient: return .undecided("\(status): \(message)")
            default: return .unavailable(error.description)
            }
        }
    }

    /// The token Depot's own calls carry (static, or Keystone's current one); nil without
    /// service credentials.
    public func serviceToken() async throws(GlanceError) -> String? {
        try await resolve(.service).token
    }
}
