import BlobStore
import Glance
import Synchronization

/// Which project each token is scoped to, asked of the cloud once per token and kept for
/// `ttl` (keyed by the token's SHA-256, never the token itself).
public final class TokenProjects: Sendable {
    public let ttl: Duration
    private let known = Mutex<[String: (project: TokenProject, at: ContinuousClock.Instant)]>([:])

    public init(ttl: Duration = .seconds(60)) { self.ttl = ttl }

    /// Why a token's project could not be matched; `status` is the HTTP answer.
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public let status: Int
        public let description: String
    }

    /// The token's project in `cloud`.
    ///
    /// - Throws: `Refusal` (401 for a token the cloud does not accept, 403 when the project
    ///   cannot be learned with this token, 503 when the cloud cannot be asked).
    public func project(of token: String, cloud: String, client: GlanceClient) async throws(Refusal) -> TokenProject {
        let key = "\(Digest.of(Array(token.utf8), algorithm: .sha256).hex)|\(cloud)"
        let now = ContinuousClock.now
        if let entry = known.withLock({ $0[key] }), now - entry.at < ttl { return entry.project }
        let project: TokenProject?
        do { project = try await client.tokenProject(token) } catch {
            if error.isTransient { throw Refusal(status: 503, description: "cannot ask cloud \(cloud) for the token's project (\(error)); retry later") }
            if error.isUnauthorized { throw Refusal(status: 401, description: "cloud \(cloud) refused the token; get a new one") }
            if error.status == 403 {
                throw Refusal(
                    status: 403,
                    description: "cannot confirm the token's project: cloud \(cloud) has no keystone: in Depot's config, so Depot learns a token's project from an image it creates with it, and Glance refused this token that (\(GlanceError.message(of: error))); use a token with the member role, or configure the cloud's keystone:")
            }
            throw Refusal(status: 403, description: "cannot confirm the token's project in cloud \(cloud): \(GlanceError.message(of: error))")
        }
        guard let project else { throw Refusal(status: 401, description: "Keystone of cloud \(cloud) does not accept the token; get a new one") }
        known.withLock { table in
            // Forget expired entries now and then, so the table holds only recent tokens.
            if table.count > 10_000 { table = table.filter { now - $0.value.at < ttl } }
            table[key] = (project, now)
        }
        return project
    }
}
