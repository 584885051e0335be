import BlobStore
import Cache
import Catalog
import Foundation
import Glance
import Logging
import NIOCore
import NIOHTTP1

/// Who may use the admin APIs.
public struct AdminAccess: Sendable {
    /// The configured admin token (`admin_token`, `--admin-token`).
    public var token: String?

    public init(token: String? = nil) { self.token = token }
}

/// The operator's APIs: Glance's cache management (`/v2/cache…`, so `glance cache-list` and
/// friends work unchanged) and Depot's own `/depot/v1/…` (pins, inventory, stats, pushes).
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

    /// An admin is the bearer of the admin token, or (with Keystone) of a token with the
    /// `admin` role, validated against Keystone.
    func isAdmin(_ request: Request, cloud: String) async -> Bool {
        guard let token = request.headers.first(name: "x-auth-token"), !token.isEmpty else { return false }
        if let adminToken = access.token, !adminToken.isEmpty, Self.constantTimeEquals(token, adminToken) { return true }
        guard let client = cache.clouds[cloud] else { return false }
        do {
            return try await client.tokenRoles(token)?.contains("admin") ?? false
        } catch {
            logger.warning("cannot validate a token with Keystone", metadata: ["error": "\(error)"])
            return false
        }
    }

    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    func respond(_ request: Request, _ response: ResponseWriter, route: Route) async {
        let cloud: String
        switch route {
        case let .glanceCache(name, _): cloud = name
        case .depot: cloud = cache.defaultCloud
        }
        guard await isAdmin(request, cloud: cloud) else {
            let status: HTTPResponseStatus = request.headers.first(name: "x-auth-token") == nil ? .unauthorized : .forbidden
            await response.sendError(
                status, "the cache management APIs are for admins: send the admin token (admin_token in the config) or a Keystone token with the admin role")
            return
        }
        switch route {
        case let .glanceCache(cloud, rest): await glanceCache(request, response, cloud: cloud, rest: rest)
        case let .depot(rest): await depot(request, response, rest: rest)
        }
    }

    // MARK: Glance's cache API

    func glanceCache(_ request: Request, _ response: ResponseWriter, cloud: String, rest: [String]) async {
        switch (request.method, rest.count) {
        case (.GET, 0):
            await listGlanceCache(response, cloud: cloud)
        case (.PUT, 1):
            do {
                _ = try await cache.prefetch(cloud: cloud, imageID: rest[0])
                await response.send(.accepted)
            } catch let error as CacheError {
                await ImageFileResponder(cache: cache, logger: logger).sendCacheError(error, response)
            } catch {
                await response.sendError(.internalServerError, "\(error)")
            }
        case (.DELETE, 1):
            do {
                guard let digest = try cache.cachedBlob(cloud: cloud, imageID: rest[0]) else {
                    await response.sendError(.notFound, "image \(rest[0]) is not cached here")
                    return
                }
                try cache.evict(digest)
                await response.send(.noContent)
            } catch let refusal as EvictionRefusal {
                await response.sendError(.conflict, refusal.description)
            } catch {
                await response.sendError(.internalServerError, "\(error)")
            }
        case (.DELETE, 0):
            let target = request.headers.first(name: "x-image-cache-clear-target")?.lowercased() ?? ""
            guard ["", "both", "cache", "queue"].contains(target) else {
                await response.sendError(.badRequest, "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.")
                return
            }
            if target != "queue" { _ = cache.prune(everything: true) }
            // Queued images are fills in progress: they finish (their clients are waiting).
            await response.send(.noContent)
        case (.POST, 1) where rest[0] == "prune":
            let (blobs, bytes) = cache.prune()
            await response.sendJSON(.ok, ["total_files_pruned": blobs, "total_bytes_pruned": bytes])
        case (.POST, 1) where rest[0] == "clean":
            do {
                let report = try cache.store.cleanTemporaryFiles()
                await response.sendJSON(.ok, ["total_files_cleaned": report.removedTemporaryFiles.count, "total_bytes_cleaned": report.removedTemporaryBytes])
            } catch {
                await response.sendError(.internalServerError, "\(error)")
            }
        case (.GET, 2) where rest[0] == "nodes":
            // One node: this Depot.
            let host = request.headers.first(name: "host") ?? "localhost"
            let cached = (try? cache.cachedBlob(cloud: cloud, imageID: rest[1])) != nil
            await response.sendJSON(.ok, cached ? ["http://\(host)"] : [String]())
        default:
            await response.sendError(.methodNotAllowed, "\(request.method.rawValue) \(request.path) is not part of the cache API")
        }
    }

    func listGlanceCache(_ response: ResponseWriter, cloud: String) async {
        do {
            let blobs = Dictionary(uniqueKeysWithValues: try cache.catalog.allBlobs().map { ($0.sha256, $0) })
            let cached: [[String: Any]] = try cache.catalog.allImages().filter { $0.cloud == cloud }.compactMap { image in
                guard let blob = blobs[image.sha256] else { return nil }
                return [
                    "image_id": image.imageID, "hits": blob.hits, "last_accessed": blob.lastAccess, "last_modified": blob.createdAt,
                    "size": blob.size,
                ]
            }
            let queued = cache.runningFills().filter { $0.cloud == cloud }.map(\.imageID)
            await response.sendJSON(.ok, ["cached_images": cached, "queued_images": queued])
        } catch {
            await response.sendError(.internalServerError, "cannot read the catalog: \(error)")
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
                let size = try cache.evict(try Digest.sha256(hex: hex))
                await response.sendJSON(.ok, ["evicted": hex, "bytes": size])
            } else if method == .PUT || method == .DELETE, let hex = path("blobs", "*", "pin")?.first {
                try cache.setPinned(try Digest.sha256(hex: hex), method == .PUT)
                await response.sendJSON(.ok, ["sha256": hex, "pinned": method == .PUT])
            } else if method == .PUT || method == .DELETE, let ids = path("images", "*", "*", "pin") {
                let (cloud, imageID) = (ids[0], ids[1])
                guard let digest = try cache.cachedBlob(cloud: cloud, imageID: imageID) else {
                    await response.sendError(.notFound, "image \(imageID) of cloud \(cloud) is not cached here; prefetch it first (PUT /depot/v1/images/\(cloud)/\(imageID))")
                    return
                }
                try cache.setPinned(digest, method == .PUT)
                await response.sendJSON(.ok, ["cloud": cloud, "image_id": imageID, "sha256": digest.hex, "pinned": method == .PUT])
            } else if method == .GET, let ids = path("images", "*", "*") {
                await response.sendJSON(.ok, try prefetchState(cloud: ids[0], imageID: ids[1]))
            } else if method == .PUT, let ids = path("images", "*", "*") {
                let fill = try await cache.prefetch(cloud: ids[0], imageID: ids[1])
                await response.sendJSON(.accepted, ["cloud": ids[0], "image_id": ids[1], "state": fill == nil ? "cached" : "filling"])
            } else if method == .POST, path("prune") != nil {
                let (blobs, bytes) = cache.prune()
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
        } catch let error as DigestParseError {
            await response.sendError(.badRequest, "\(error)")
        } catch let refusal as EvictionRefusal {
            if case .notCached = refusal { await response.sendError(.notFound, refusal.description) } else { await response.sendError(.conflict, refusal.description) }
        } catch let error as CacheError {
            await ImageFileResponder(cache: cache, logger: logger).sendCacheError(error, response)
        } catch {
            await response.sendError(.internalServerError, "\(error)")
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
