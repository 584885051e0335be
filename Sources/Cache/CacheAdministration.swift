import BlobStore
import Catalog
import Foundation
import Glance
import Metrics

/// One blob as the operator sees it.
public struct BlobInventory: Sendable {
    public let blob: BlobRecord
    public let images: [ImageRecord]
    public let pushes: [PushRecord]
    public let pinned: Bool

    public var json: [String: Any] {
        [
            "sha256": blob.sha256, "size": Int(blob.size), "sha512": blob.sha512 ?? NSNull(), "md5": blob.md5 ?? NSNull(),
            "hits": Int(blob.hits), "last_access": blob.lastAccess, "created_at": blob.createdAt, "pinned": pinned,
            "images": images.map { image -> [String: Any] in
                ["cloud": image.cloud, "image_id": image.imageID, "name": image.name ?? NSNull(), "status": image.status ?? NSNull()]
            },
            "pushes": pushes.map(\.json),
        ]
    }
}

extension PushRecord {
    public var json: [String: Any] {
        [
            "cloud": cloud, "image_id": imageID, "sha256": sha256, "method": method.rawValue, "state": state.rawValue,
            "attempts": attempts, "last_error": lastError ?? NSNull(), "next_attempt": nextAttempt, "created_at": createdAt,
            "updated_at": updatedAt,
        ]
    }
}

extension BlobInventory {
    /// Every blob of a Catalog with its images and pushes, least recently used first (also
    /// what `depot cache ls --data-dir` reads from a stopped Depot).
    public static func all(in catalog: Catalog) throws -> [BlobInventory] {
        let images = Dictionary(grouping: try catalog.allImages(), by: \.sha256)
        let pushes = Dictionary(grouping: try catalog.pushes(), by: \.sha256)
        return try catalog.allBlobs().map { blob in
            BlobInventory(blob: blob, images: images[blob.sha256] ?? [], pushes: pushes[blob.sha256] ?? [], pinned: blob.pinned)
        }
    }
}

/// The operator's view and levers (see `Inventory`), and prefetch.
extension ImageCache {
    /// Every blob with the images that map to it and their pushes, least recently used first.
    public func inventory() throws -> [BlobInventory] { try inventoryRoom.all() }

    public func inventory(of digest: Digest) throws -> BlobInventory? { try inventoryRoom.of(digest) }

    /// Budget, use, hit ratio, bytes by source, evictions, pushes.
    public func stats() throws -> [String: Any] { try inventoryRoom.stats() }

    /// Images whose fill is running (Glance's "queued images").
    public func runningFills() -> [(cloud: String, imageID: String)] {
        fillKeys().map { ($0.cloud, $0.imageID) }
    }

    /// Pins (or unpins) a blob: a pinned blob survives any budget pressure.
    public func setPinned(_ digest: Digest, _ pinned: Bool) async throws { try await inventoryRoom.setPinned(digest, pinned) }

    /// The blob an image of a cloud is cached in.
    public func cachedBlob(cloud: String, imageID: String) throws -> Digest? { try inventoryRoom.cachedBlob(cloud: cloud, imageID: imageID) }

    /// Evicts a blob now (refused for pinned, pending-push and in-use blobs).
    @discardableResult
    public func evict(_ digest: Digest) async throws -> UInt64 { try await inventoryRoom.evict(digest) }

    /// Evicts least recently used blobs: down to the low watermark, or (`everything`) all
    /// that may go. Returns how many blobs and bytes went.
    public func prune(everything: Bool = false) async -> (blobs: Int, bytes: UInt64) { await inventoryRoom.prune(everything: everything) }

    /// Makes a failed push pending again, with its attempts reset.
    public func retryPush(cloud: String, imageID: String) async throws -> PushRecord? {
        try await inventoryRoom.retryPush(cloud: cloud, imageID: imageID)
    }

    /// Starts caching an image with Depot's service credentials (Glance's cache queue).
    ///
    /// - Returns: the fill, or nil when the image is already here.
    /// - Throws: `CacheError` (see `prefetch(cloud:image:)`; `.backendRefused` when the service
    ///   credentials cannot read the image).
    public func prefetch(cloud: String, imageID: String) async throws -> Fill? {
        let client = try client(for: cloud)
        let image: GlanceImage
        do {
            image = try await freshRecord(cloud: cloud) { () async throws(GlanceError) in try await client.showImage(imageID, auth: .service) }
        } catch {
            if let status = error.status, !error.isTransient { throw CacheError.backendRefused(status: status, message: GlanceError.message(of: error)) }
            throw CacheError.backendUnavailable(cloud: cloud, reason: "\(error)")
        }
        return try await prefetch(cloud: cloud, image: image)
    }

    /// Starts caching an image whose record was just read: the fill runs with Depot's service
    /// credentials, in the background.
    ///
    /// - Returns: the fill, or nil when the image is already here (cached, or uploaded here
    ///   and still owed to Glance).
    /// - Throws: `CacheError.imageNotActive` for an image without data to cache (Glance's cache
    ///   queues only active images); budget, disk and fill-limit errors as for a download.
    public func prefetch(cloud: String, image: GlanceImage) async throws -> Fill? {
        if !image.isActive, owesAcknowledgedBytes(cloud: cloud, image: image) { return nil }
        guard image.isActive else { throw CacheError.imageNotActive(imageID: image.id, status: image.status ?? "unknown") }
        let authorized = AuthorizedImage(cloud: cloud, image: image, fromOfflineGrace: false)
        if try await resolve(authorized) != nil { return nil }
        return try await fill(authorized).fill
    }
}
