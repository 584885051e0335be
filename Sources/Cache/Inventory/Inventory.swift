import BlobStore
import Catalog
import Foundation
import Glance

/// The operator's view and levers: inventory, stats, pins, evictions, push retries.
final class Inventory: Sendable {
    private let store: BlobStore
    private let catalog: Catalog
    /// Where the Catalog's writes run.
    private let disk: DiskPools
    private let budget: DiskBudget
    private let resolver: BlobResolver
    private let pushes: PushQueue
    private let fills: FillCoordinator
    private let statistics: CacheStatistics
    private let integrity: IntegrityStatistics

    init(
        store: BlobStore, catalog: Catalog, disk: DiskPools, budget: DiskBudget, resolver: BlobResolver, pushes: PushQueue,
        fills: FillCoordinator, statistics: CacheStatistics, integrity: IntegrityStatistics
    ) {
        self.store = store
        self.catalog = catalog
        self.disk = disk
        self.budget = budget
        self.resolver = resolver
        self.pushes = pushes
        self.fills = fills
        self.statistics = statistics
        self.integrity = integrity
    }

    /// Every blob with the images that map to it and their pushes, least recently used first.
    func all() throws -> [BlobInventory] { try BlobInventory.all(in: catalog) }

    func of(_ digest: Digest) throws -> BlobInventory? {
        guard let blob = try catalog.blob(digest) else { return nil }
        return BlobInventory(
            blob: blob, images: try catalog.images(of: digest), pushes: try catalog.pushes().filter { $0.sha256 == digest.hex }, pinned: blob.pinned)
    }

    /// Budget, use, hit ratio, bytes by source, evictions, pushes.
    func stats() throws -> [String: Any] {
        let usage = budget.usage
        let counts = budget.counts
        let free = budget.freeDiskBytes()
        let pushes = try catalog.pushes()
        var byState: [String: Int] = [:]
        for push in pushes { byState[push.state.rawValue, default: 0] += 1 }
        var result: [String: Any] = [
            "budget_bytes": budget.watermarks?.budget ?? NSNull(),
            "high_watermark": budget.watermarks?.high ?? NSNull(),
            "low_watermark": budget.watermarks?.low ?? NSNull(),
            "min_free_disk_bytes": budget.minimumFreeBytes ?? NSNull(),
            "used_bytes": usage.used, "reserved_bytes": usage.reserved,
            "free_disk_bytes": free ?? NSNull(),
            "blobs": counts.blobs, "pinned_blobs": counts.pinned, "blobs_waiting_for_push": counts.held,
            "evictions": counts.evictions, "evicted_bytes": counts.evictedBytes,
            "fills_running": fills.running.count, "pushes_running": self.pushes.inFlight,
            "pushes": byState,
            "push_failures_after_ack": self.pushes.failureAfterAcknowledgementCount,
        ]
        for (key, value) in statistics.snapshot { result[key] = value }
        for (key, value) in integrity.snapshot { result[key] = value }
        return result
    }

    /// Pins (or unpins) a blob: a pinned blob survives any budget pressure.
    func setPinned(_ digest: Digest, _ pinned: Bool) async throws {
        guard try catalog.blob(digest) != nil else { throw EvictionRefusal.notCached(digest.hex) }
        try await budget.setPinned(digest, pinned)
    }

    /// The blob an image of a cloud is cached in.
    func cachedBlob(cloud: String, imageID: String) throws -> Digest? {
        guard let mapping = try catalog.mapping(cloud: cloud, imageID: imageID), store.contains(mapping.digest) else { return nil }
        return mapping.digest
    }

    /// Evicts a blob now (refused for pinned, pending-push and in-use blobs).
    @discardableResult
    func evict(_ digest: Digest) async throws -> UInt64 {
        let size = try await budget.evictNow(digest)
        resolver.forgetBlob(digest)
        return size
    }

    /// Evicts least recently used blobs: down to the low watermark, or (`everything`) all
    /// that may go. Returns how many blobs and bytes went.
    func prune(everything: Bool = false) async -> (blobs: Int, bytes: UInt64) {
        let victims = await budget.prune(everything: everything)
        for victim in victims { resolver.forgetBlob(victim.digest) }
        return (victims.count, victims.reduce(0) { $0 + $1.size })
    }

    /// Makes a failed push pending again, with its attempts reset.
    func retryPush(cloud: String, imageID: String) async throws -> PushRecord? {
        guard var push = try catalog.push(cloud: cloud, imageID: imageID), push.state == .failed else { return nil }
        await budget.hold(push.digest, by: .push(ImageKey(cloud: cloud, imageID: imageID)))
        guard store.contains(push.digest) else {
            budget.release(push.digest, by: .push(ImageKey(cloud: cloud, imageID: imageID)))
            throw EvictionRefusal.notCached(push.sha256)
        }
        push.state = .pending
        push.attempts = 0
        push.lastError = nil
        push.nextAttempt = Date().timeIntervalSince1970
        // The writes sync the WAL and may wait seconds for the lock: on the disk pool.
        let (catalog, pending) = (catalog, push)
        do { try await disk.run { () throws in try catalog.update(pending) } } catch {
            budget.release(push.digest, by: .push(ImageKey(cloud: cloud, imageID: imageID)))
            throw error
        }
        // The failure unmapped the image; while the push is pending it is served from here.
        if try catalog.mapping(cloud: cloud, imageID: imageID) == nil {
            let record = ImageRecord(cloud: cloud, imageID: imageID, sha256: push.sha256, status: "queued")
            try await disk.run { () throws in try catalog.map(record) }
        }
        pushes.wake()
        return push
    }
}
