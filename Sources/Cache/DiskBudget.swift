import BlobStore
import Catalog
import Eviction
import Foundation
import Logging
import Synchronization

/// The byte budget of the blob store: which blobs to evict, and room reserved for fills.
///
/// A fill reserves its image's size before it starts; when the reservation would cross the
/// high watermark, least recently used blobs are evicted down to the low one. Blobs that are
/// pinned or being read are never chosen. Only Depot's own bytes count. Used bytes plus
/// reservations never exceed the budget.
final class DiskBudget: Sendable {
    let watermarks: Watermarks
    private let store: BlobStore
    private let catalog: Catalog
    private let logger: Logger

    private struct State {
        var index = LRUIndex()
        var reserved: UInt64 = 0
        var readers: [Digest: Int] = [:]
        var pinned: Set<Digest> = []
        /// Blobs a staged or pending push still needs: the only copy of acknowledged bytes.
        var held: Set<Digest> = []
    }

    private let state = Mutex(State())

    /// Loads the recency order from the Catalog (oldest access first).
    init(watermarks: Watermarks, store: BlobStore, catalog: Catalog, logger: Logger) throws {
        self.watermarks = watermarks
        self.store = store
        self.catalog = catalog
        self.logger = logger
        let blobs = try catalog.allBlobs()
        let held = try catalog.heldDigests()
        state.withLock { state in
            state.held = held
            for blob in blobs {
                state.index.touch(blob.digest, size: UInt64(blob.size))
                if blob.pinned { state.pinned.insert(blob.digest) }
            }
        }
    }

    /// Bytes held by committed blobs, and reserved by running fills.
    var usage: (used: UInt64, reserved: UInt64) { state.withLock { ($0.index.totalBytes, $0.reserved) } }

    func touch(_ digest: Digest) {
        state.withLock { _ = $0.index.touch(digest) }
    }

    func beginRead(_ digest: Digest) {
        state.withLock { $0.readers[digest, default: 0] += 1 }
    }

    func endRead(_ digest: Digest) {
        state.withLock { state in
            if let count = state.readers[digest], count > 1 { state.readers[digest] = count - 1 } else { state.readers[digest] = nil }
        }
    }

    /// Keeps a blob until `release`: its push to a backend is pending.
    func hold(_ digest: Digest) {
        _ = state.withLock { $0.held.insert(digest) }
    }

    func release(_ digest: Digest) {
        _ = state.withLock { $0.held.remove(digest) }
    }

    /// Reserves room for `bytes`, evicting least recently used blobs when the high watermark
    /// would be crossed.
    ///
    /// - Returns: the evicted blobs' digests (so callers can forget them).
    /// - Throws: `CacheError.budgetExhausted` when the bytes cannot fit even after evicting
    ///   everything that may go.
    func reserve(_ bytes: UInt64) throws(CacheError) -> [Digest] {
        let budget = watermarks.budget
        let victims: [(digest: Digest, size: UInt64)]? = state.withLock { state in
            let used = state.index.totalBytes + state.reserved
            let mustKeep = { (digest: Digest) in state.pinned.contains(digest) || state.held.contains(digest) || state.readers[digest] != nil }
            // Down to the low watermark when the high one would be crossed; that is always at
            // least what fitting needs, so falling short of fitting means it cannot fit.
            let need = watermarks.bytesToFree(used: used, incoming: bytes)
            let chosen = need > 0 ? state.index.victims(toFree: need, mustKeep: mustKeep) : []
            let freed = chosen.reduce(0) { $0 + $1.size }
            guard used + bytes <= budget + freed else { return nil }
            for victim in chosen { state.index.remove(victim.digest) }
            state.reserved += bytes
            return chosen
        }
        guard let victims else {
            let (used, reserved) = usage
            throw .budgetExhausted(needed: bytes, budget: budget, used: used + reserved)
        }
        for victim in victims { evict(victim.digest, size: victim.size) }
        return victims.map(\.digest)
    }

    /// A fill ended: its reservation becomes the blob (or is returned, on failure).
    func settle(reserved bytes: UInt64, committed blob: CommittedBlob?) {
        state.withLock { state in
            state.reserved -= min(bytes, state.reserved)
            if let blob { state.index.touch(blob.digest, size: blob.size) }
        }
    }

    /// Removes a blob: first its Catalog rows, so no request resolves to it any more, then
    /// the file. A crash in between leaves an unindexed file for fsck, never an index entry
    /// that points at nothing.
    private func evict(_ digest: Digest, size: UInt64) {
        do {
            try catalog.removeBlob(digest)
            try store.remove(digest)
            logger.info("evicted", metadata: ["blob": "\(digest.hex)", "size": "\(size)"])
        } catch {
            logger.error("eviction failed", metadata: ["blob": "\(digest.hex)", "error": "\(error)"])
        }
    }
}
