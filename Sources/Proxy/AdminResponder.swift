import BlobStore
import Cache
import Catalog
import Foundation
import Glance
import HTTPCore
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Who may use the admin APIs.
public struct AdminAccess: Sendable {
    /// The configured admin token (`admin_token`, `--admin-token`).
    public var token: String?
    /// Glance's recent answers on who is an admin.
    let decisions = AdminDecisions()

    public init(token: String? = nil) { self.token = token }
}

/// Whether a token is an admin's, as Glance answered, kept a minute per token and cloud (never
/// across tokens): the cache API's calls come in bursts (`glance cache-list` asks twice).
final class AdminDecisions: Sendable {
    static let lifetime: Duration = .seconds(60)
    private let table = Mutex<[String: (admin: Bool, at: ContinuousClock.Instant)]>([:])

    func lookup(_ key: String) -> Bool? {
        table.withLock { table in
            guard let entry = table[key], ContinuousClock.now - entry.at < Self.lifetime else { return nil }
            return entry.admin
        }
    }

    func record(_ key: String, admin: Bool) {
        let now = ContinuousClock.now
        table.withLock { table in
            if table.count >= 4096 { table = table.filter { now - $0.value.at < Self.lifetime } }
            table[key] = (admin, now)
        }
    }

    /// The table's key: a hash, so it never holds live credentials.
    static func key(token: String, cloud: String) -> String {
        "\(Digest.of(Array(token.utf8), algorithm: .sha256).hex)|\(cloud)"
    }
}

/// The operator's APIs: Glance's cache management (`/v2/cache…`, see `GlanceCacheResponder`)
/// and Depot's own `/depot/v1/…` (pins, inventory, stats, pushes).
struct AdminResponder {
    let cache: ImageCache
    let access: AdminAccess
    let logger: Logger

    /// Where an admin request goes.
    enum Route: Equatable {
        case glanceCache(cloud: String, rest: [String])
        case depot(rest: [String])
    }

    // MARK: Authorization

    /// Who is asking.
    enum Caller: Equatable {
        /// The bearer of Depot's admin token; Depot's service credentials act for it upstream.
        case depotAdmin
        /// A token Glance's policy lets use its cache API (the admin role, by default).
        case admin(token: String)
        /// A token Glance knows, refused the cache API.
        case member(token: String)
        /// No token, or one Glance does not accept: its message.
        case unauthenticated(String)
        /// Neither Glance nor Keystone could be asked.
        case undecided(String)

        /// The credentials that look images up for this caller, as Glance would with its own.
        var auth: RequestAuth? {
            switch self {
            case .depotAdmin: .service
            case let .admin(token), let .member(token): .token(token)
            case .unauthenticated, .undecided: nil
            }
        }

        var isAdmin: Bool {
            switch self {
            case .depotAdmin, .admin: true
            default: false
            }
        }
    }

    static let missingToken =
        "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token: a token with the admin role, or Depot's admin_token."

    /// Decides who is asking: Depot's admin token, or Glance's own answer for the token (its
    /// cache policy, see `GlanceClient.cachePolicy`), so that whoever Glance treats as an admin
    /// Depot does too, with Keystone or without. Keystone's roles decide when Glance cannot.
    func caller(_ request: Request, cloud: String) async -> Caller {
        guard let token = request.authToken, !token.isEmpty else { return .unauthenticated(Self.missingToken) }
        if let adminToken = access.token, !adminToken.isEmpty, Self.constantTimeEquals(token, adminToken) { return .depotAdmin }
        guard let client = cache.clouds[cloud] else { return .undecided("no cloud named \(cloud) is configured") }
        let key = AdminDecisions.key(token: token, cloud: cloud)
        if let admin = access.decisions.lookup(key) { return admin ? .admin(token: token) : .member(token: token) }
        let reason: String
        switch await client.cachePolicy(token: token) {
        case .allowed:
            access.decisions.record(key, admin: true)
            return .admin(token: token)
        case .refused:
            access.decisions.record(key, admin: false)
            return .member(token: token)
        case let .unauthenticated(message):
            return .unauthenticated(message.isEmpty ? Self.missingToken : message)
        case let .undecided(answer):
            reason = answer
        case let .unavailable(error):
            reason = error
        }
        do {
            if let roles = try await client.tokenRoles(token) {
                guard !roles.isEmpty else { return .unauthenticated("Keystone does not accept the token; get a new one") }
                return roles.contains("admin") ? .admin(token: token) : .member(token: token)
            }
        } catch {
            logger.warning("cannot validate a token with Keystone", metadata: ["error": "\(error)"])
            return .undecided("\(reason); Keystone: \(error)")
        }
        return .undecided(reason)
    }

    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Answers a caller who may not go on (not an admin, or not known); nil for an admin.
    static func refusal(_ caller: Caller, cloud: String, action: String) -> (status: HTTPResponseStatus, message: String)? {
        switch caller {
        case .depotAdmin, .admin: nil
        case .member:
            (.forbidden, "You are not authorized to complete \(action) action. The cache and admin APIs are for admins: send a token with the admin role, or Depot's admin_token (admin_token in the config).")
        case let .unauthenticated(message): (.unauthorized, message)
        case let .undecided(reason):
            (.serviceUnavailable, "cannot ask the image service of cloud \(cloud) whether this token is an admin's (\(reason)); retry later, or send Depot's admin_token")
        }
    }

    func respond(_ request: Request, _ response: ResponseWriter, route: Route) async {
        switch route {
        case let .glanceCache(cloud, rest):
            await GlanceCacheResponder(cache: cache, admin: self, logger: logger).respond(request, response, cloud: cloud, rest: rest)
        case let .depot(rest):
            let caller = await caller(request, cloud: cache.defaultCloud)
            if let refusal = Self.refusal(caller, cloud: cache.defaultCloud, action: "depot_admin") {
                await response.sendError(refusal.status, refusal.message)
                return
            }
            await depot(request, response, rest: rest)
        }
    }

    // MARK: Depot's admin API

    func depot(_ request: Request, _ response: ResponseWriter, rest: [String]) async {
        do {
            let method = request.method
            func path(_ pattern: String...) -> [String]? {
                // "*" matches one segment; the matched segments are returned in order.
                guard rest.count == pattern.count else { return nil }
                var captured: [String] = []
                for (segment, expected) in zip(rest, pattern) {
                    if expected == "*" { captured.append(segment) } else if segment != expected { return nil }
                }
                return captured
            }
            if method == .GET, path("stats") != nil {
                await response.sendJSON(.ok, try cache.stats())
            } else if method == .GET, path("blobs") != nil {
                await response.sendJSON(.ok, ["blobs": try cache.inventory().map(\.json)])
            } else if method == .GET, let hex = path("blobs", "*")?.first {
                guard let item = try cache.inventory(of: try Digest.sha256(hex: hex)) else {
                    await response.sendError(.notFound, "no blob \(hex) here")
                    return
                }
                await response.sendJSON(.ok, item.json)
            } else if method == .DELETE, let hex = path("blobs", "*")?.first {
                let size = try await cache.evict(try Digest.sha256(hex: hex))
                await response.sendJSON(.ok, ["evicted": hex, "bytes": size])
            } else if method == .PUT || method == .DELETE, let hex = path("blobs", "*", "pin")?.first {
                try await cache.setPinned(try Digest.sha256(hex: hex), method == .PUT)
                await response.sendJSON(.ok, ["sha256": hex, "pinned": method == .PUT])
            } else if method == .PUT || method == .DELETE, let ids = path("images", "*", "*", "pin") {
                let (cloud, imageID) = (ids[0], ids[1])
                guard let digest = try cache.cachedBlob(cloud: cloud, imageID: imageID) else {
                    await response.sendError(.notFound, "image \(imageID) of cloud \(cloud) is not cached here; prefetch it first (PUT /depot/v1/images/\(cloud)/\(imageID))")
                    return
                }
                try await cache.setPinned(digest, method == .PUT)
                await response.sendJSON(.ok, ["cloud": cloud, "image_id": imageID, "sha256": digest.hex, "pinned": method == .PUT])
            } else if method == .GET, let ids = path("images", "*", "*") {
                await response.sendJSON(.ok, try prefetchState(cloud: ids[0], imageID: ids[1]))
            } else if method == .PUT, let ids = path("images", "*", "*") {
                let fill = try await cache.prefetch(cloud: ids[0], imageID: ids[1])
                await response.sendJSON(.accepted, ["cloud": ids[0], "image_id": ids[1], "state": fill == nil ? "cached" : "filling"])
            } else if method == .POST, path("prune") != nil {
                let (blobs, bytes) = await cache.prune()
                await response.sendJSON(.ok, ["blobs": blobs, "bytes": bytes])
            } else if method == .GET, path("pushes") != nil {
                await response.sendJSON(.ok, ["pushes": try cache.catalog.pushes().map(\.json)])
            } else if method == .POST, let ids = path("pushes", "*", "*", "retry") {
                guard let push = try await cache.retryPush(cloud: ids[0], imageID: ids[1]) else {
                    await response.sendError(.conflict, "no failed push for image \(ids[1]) of cloud \(ids[0]); only failed pushes are retried")
                    return
                }
                await response.sendJSON(.ok, push.json)
            } else {
                await response.sendError(.notFound, "no admin route \(method.rawValue) /depot/v1/\(rest.joined(separator: "/")); see the README")
            }
        } catch let error as CacheError {
            await GlanceCacheResponder.send(error, imageID: nil, response)
        } catch {
            await response.sendError(error)
        }
    }

    /// Where an image's caching stands (`cached`, `filling` with bytes written, `not cached`),
    /// for `depot cache prefetch`'s progress.
    func prefetchState(cloud: String, imageID: String) throws -> [String: Any] {
        var state: [String: Any] = ["cloud": cloud, "image_id": imageID, "state": "not cached"]
        if let fill = cache.runningFill(cloud: cloud, imageID: imageID) {
            state["state"] = "filling"
            state["size"] = fill.expectedSize
            state["written"] = fill.written
        } else if let digest = try cache.cachedBlob(cloud: cloud, imageID: imageID) {
            let size = (try? cache.store.size(of: digest)) ?? 0
            state["state"] = "cached"
            state["size"] = size
            state["written"] = size
        }
        return state
    }
}
