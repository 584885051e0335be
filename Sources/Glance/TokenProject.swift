import Foundation
import Logging

/// The project a user's token is scoped to, and how Depot learned it.
public struct TokenProject: Sendable, Equatable {
    public enum Source: String, Sendable {
        /// Keystone's token validation (`GET /v3/auth/tokens`).
        case keystone
        /// The `owner` Glance gave an image created with the token (then deleted).
        case glanceImageOwner = "glance image owner"
    }

    /// The project's id (Glance's `owner`, ONAP's `tenantid`).
    public var id: String
    /// Its name, when Keystone told it.
    public var name: String?
    public var source: Source
}

extension GlanceClient {
    /// The project of a user's token.
    ///
    /// With Keystone (the cloud's service credentials are Keystone's), Keystone validates the
    /// token with Depot's service token and names its project. Without, Glance is asked: an
    /// image created with the token is owned by the token's project (Glance sets `owner` from
    /// the request context and ignores one in the body for non-admins); the probe image is
    /// deleted at once. That needs a token that may create images; Glance's own checks refuse
    /// others, and then Depot cannot confirm a project.
    ///
    /// - Returns: nil for a token Keystone does not accept.
    /// - Throws: `GlanceError` when Keystone or Glance cannot be asked, or refuses the probe.
    public func tokenProject(_ userToken: String) async throws(GlanceError) -> TokenProject? {
        if let (status, body) = try await validateWithKeystone(userToken) {
            guard status == 200 else { return nil }
            guard let project = (try? JSONDecoder().decode(ScopedToken.self, from: Data(body)))?.token.project else {
                throw .authentication(reason: "the token is not scoped to a project (a domain- or system-scoped token); use a project-scoped token")
            }
            return TokenProject(id: project.id, name: project.name, source: .keystone)
        }
        let probe = try await createImage(
            ["name": .string("depot-project-probe"), "visibility": .string("private"), "tags": .array([.string("depot-project-probe")])],
            auth: .token(userToken))
        do { try await deleteImage(probe.id, auth: .token(userToken)) } catch {
            logger.warning("could not delete a project probe image; delete it by hand", metadata: ["image": "\(probe.id)", "error": "\(error)"])
        }
        guard let owner = probe.owner else { throw .invalidResponse(reason: "Glance created an image without an owner", url: "/v2/images/\(probe.id)") }
        return TokenProject(id: owner, name: nil, source: .glanceImageOwner)
    }
}

private struct ScopedToken: Decodable {
    struct Token: Decodable {
        struct Project: Decodable {
            var id: String
            var name: String?
        }
        var project: Project?
    }

    var token: Token
}
