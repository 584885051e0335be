import Cache
import Foundation
import Glance
import HTTPCore
import Logging
import NIOHTTP1

/// Glance's cache API (`/v2/cache…`, image API v2.14–v2.18) answered from Depot's cache, so
/// `glance cache-*` works unchanged: Glance 33's routes, checks in Glance's order, statuses
/// and bodies (`glance/api/v2/router.py`, `glance/api/v2/cached_images.py`).
struct GlanceCacheResponder {
    let cache: ImageCache
    let admin: AdminResponder
    let logger: Logger

    /// A call, as Glance's router maps it.
    enum Call: Equatable {
        case list, clear, prune, clean
        case queue(String), delete(String), nodes(String)
        /// The path exists, not with this method: `Allow` lists those it has.
        case methodNotAllowed(allow: String)
        case notFound

        init(method: HTTPMethod, rest: [String]) {
            func only(_ allowed: [HTTPMethod], _ call: Call) -> Call {
                allowed.contains(method) ? call : .methodNotAllowed(allow: allowed.map(\.rawValue).joined(separator: ", "))
            }
            switch rest.count {
            case 0: self = method == .DELETE ? .clear : only([.GET, .DELETE], .list)
            case 1 where rest[0] == "prune": self = only([.POST], .prune)
            case 1 where rest[0] == "clean": self = only([.POST], .clean)
            case 1: self = method == .PUT ? .queue(rest[0]) : only([.DELETE, .PUT], .delete(rest[0]))
            case 2 where rest[0] == "nodes": self = only([.GET], .nodes(rest[1]))
            default: self = .notFound
            }
        }

        /// Glance's policy rule for the call (all `rule:context_is_admin` by default).
        var policy: String {
            switch self {
            case .list: "cache_list"
            case .clear, .delete: "cache_delete"
            case .prune: "cache_prune"
            case .clean: "cache_clean"
            case .queue: "cache_image"
            case .nodes: "list_cached_nodes"
            case .methodNotAllowed, .notFound: ""
            }
        }
    }

    func respond(_ request: Request, _ response: ResponseWriter, cloud: String, rest: [String]) async {
        let call = Call(method: request.method, rest: rest)
        // Glance's auth middleware answers before its router and its controller.
        let caller = await admin.caller(request, cloud: cloud)
        if case let .unauthenticated(message) = caller {
            await response.sendError(.unauthorized, message)
            return
        }
        switch call {
        case let .methodNotAllowed(allow):
            await response.sendError(
                .methodNotAllowed, "The method \(request.method.rawValue) is not allowed for this resource.", headers: ["allow": allow])
            return
        case .notFound:
            await response.sendError(
                .notFound,
                "The resource could not be found. The cache API is /v2/cache, /v2/cache/{image_id}, /v2/cache/nodes/{image_id}, /v2/cache/prune and /v2/cache/clean.")
            return
        default: break
        }
        // Queue and delete read the image (with the caller's token) before the policy check.
        switch call {
        case let .queue(imageID):
            guard let image = await lookUp(imageID, cloud: cloud, caller: caller, response) else { return }
            guard await allowed(caller, call, cloud: cloud, response) else { return }
            await queue(image, cloud: cloud, response)
        case let .delete(imageID):
            let here = (try? cache.cachedBlob(cloud: cloud, imageID: imageID)) != nil || cache.runningFill(cloud: cloud, imageID: imageID) != nil
            // Glance goes on without the record when the image is (still) in its cache.
            if !here { guard await lookUp(imageID, cloud: cloud, caller: caller, response) != nil else { return } }
            guard await allowed(caller, call, cloud: cloud, response) else { return }
            await delete(imageID, cloud: cloud, response)
        case let .nodes(imageID):
            guard await allowed(caller, call, cloud: cloud, response),
                  await lookUp(imageID, cloud: cloud, caller: caller, response) != nil
            else { return }
            let host = request.headers.first(name: "host") ?? "localhost"
            let cached = (try? cache.cachedBlob(cloud: cloud, imageID: imageID)) != nil
            await response.sendJSON(.ok, cached ? ["http://\(host)"] : [String]())
        default:
            guard await allowed(caller, call, cloud: cloud, response) else { return }
            await respondWithoutImage(call, request, response, cloud: cloud)
        }
    }

    /// The calls that name no image: list, clear, prune, clean.
    func respondWithoutImage(_ call: Call, _ request: Request, _ response: ResponseWriter, cloud: String) async {
        switch call {
        case .list:
            await list(response, cloud: cloud)
        case .clear:
            let target = request.headers.first(name: "x-image-cache-clear-target")?.lowercased() ?? ""
            guard ["", "cache", "queue"].contains(target) else {
                await response.sendError(.badRequest, "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.")
                return
            }
            if target != "queue" { _ = await cache.prune(everything: true) }
            // Queued images are fills in progress: they finish (their clients are waiting).
            await response.send(.noContent)
        case .prune:
            let (blobs, bytes) = await cache.prune()
            await response.sendJSON(.ok, ["total_files_pruned": blobs, "total_bytes_pruned": bytes])
        case .clean:
            do {
                let report = try cache.store.cleanTemporaryFiles()
                logger.info(
                    "cleaned temporary files", metadata: ["files": "\(report.removedTemporaryFiles.count)", "bytes": "\(report.removedTemporaryBytes)"])
                // Glance answers 200 with an empty body.
                await response.send(.ok)
            } catch {
                await response.sendError(.internalServerError, "cannot clean the data directory's tmp/: \(error)")
            }
        default:
            await response.sendError(.notFound, "The resource could not be found.")
        }
    }

    /// Whether the caller passes the call's policy; answers 403 (or 503) when not.
    func allowed(_ caller: AdminResponder.Caller, _ call: Call, cloud: String, _ response: ResponseWriter) async -> Bool {
        guard let refusal = AdminResponder.refusal(caller, cloud: cloud, action: call.policy) else { return true }
        await response.sendError(refusal.status, refusal.message)
        return false
    }

    /// The image's record as the caller sees it (Glance's `image_repo.get`), or nil after
    /// answering: 404 "Image … not found." when it is missing, deleted or hidden from the caller.
    func lookUp(_ imageID: String, cloud: String, caller: AdminResponder.Caller, _ response: ResponseWriter) async -> GlanceImage? {
        guard let auth = caller.auth else {
            if let refusal = AdminResponder.refusal(caller, cloud: cloud, action: "") { await response.sendError(refusal.status, refusal.message) }
            return nil
        }
        do {
            let client = try cache.client(for: cloud)
            return try await cache.freshRecord(cloud: cloud) { () async throws(GlanceError) in try await client.showImage(imageID, auth: auth) }
        } catch let error as CacheError {
            await Self.send(error, imageID: imageID, response)
        } catch let error as GlanceError {
            let refusal: CacheError =
                if let status = error.status, !error.isTransient { .backendRefused(status: status, message: GlanceError.message(of: error)) }
                else { .backendUnavailable(cloud: cloud, reason: "\(error)") }
            await Self.send(refusal, imageID: imageID, response)
        } catch {
            await response.sendError(.internalServerError, "\(error)")
        }
        return nil
    }

    /// `PUT /v2/cache/{id}`: Glance queues the image and answers 202; Depot starts its fill.
    func queue(_ image: GlanceImage, cloud: String, _ response: ResponseWriter) async {
        do {
            _ = try await cache.prefetch(cloud: cloud, image: image)
            await response.send(.accepted)
        } catch let error as CacheError {
            await Self.send(error, imageID: image.id, response)
        } catch {
            await response.sendError(.internalServerError, "\(error)")
        }
    }

    /// `DELETE /v2/cache/{id}`: 204 whether or not it was cached, as Glance.
    func delete(_ imageID: String, cloud: String, _ response: ResponseWriter) async {
        do {
            if let digest = try cache.cachedBlob(cloud: cloud, imageID: imageID) { try await cache.evict(digest) }
            await response.send(.noContent)
        } catch {
            await response.sendError(error)
        }
    }

    /// `GET /v2/cache`: Glance's `{"cached_images": […], "queued_images": […]}`.
    func list(_ response: ResponseWriter, cloud: String) async {
        do {
            let blobs = Dictionary(uniqueKeysWithValues: try cache.catalog.allBlobs().map { ($0.sha256, $0) })
            let images = try cache.catalog.allImages().filter { $0.cloud == cloud && blobs[$0.sha256] != nil }
            let cached: [[String: Any]] = images.enumerated().map { index, image in
                let blob = blobs[image.sha256]!
                // Glance's `id` is its row's number; Depot numbers its entries.
                return [
                    "id": index + 1, "image_id": image.imageID, "hits": blob.hits, "last_accessed": blob.lastAccess,
                    "last_modified": blob.createdAt, "size": blob.size, "checksum": (blob.md5 ?? image.checksum).map { $0 as Any } ?? NSNull(),
                ]
            }
            let queued = cache.runningFills().filter { $0.cloud == cloud }.map(\.imageID)
            await response.sendJSON(.ok, ["cached_images": cached, "queued_images": queued])
        } catch {
            await response.sendError(.internalServerError, "cannot read the catalog: \(error)")
        }
    }

    /// The cache API's answer to a cache error: Glance's where Glance has one (an image that is
    /// not active cannot be queued: 400), Depot's own for what only Depot has (budget, disk,
    /// fill limit).
    static func send(_ error: CacheError, imageID: String?, _ response: ResponseWriter) async {
        switch error {
        case let .imageNotActive(id, status):
            await response.sendError(
                .badRequest, "Only images with status active can be targeted for queueing; image \(id) is \(status), so it has no data to cache.")
        case .backendRefused(404, _) where imageID != nil:
            await response.sendError(.notFound, "Image \(imageID!) not found.")
        default:
            await response.sendError(error)
        }
    }
}
