import BlobStore
import Catalog
import Eviction
import Foundation
import Logging
import Metrics
import Synchronization

/// Why the operator's eviction request cannot be carried out.
public enum EvictionRefusal: Error, CustomStringConvertible, Sendable {
    case pinned(Digest)
    case pushPending(Digest)
    case beingRead(Digest)
    case notCached(String)

    public var description: String {
        switch self {
        case let .pinned(digest): "blob \(digest.hex) is pinned; unpin it first"
        case let .pushPending(digest): "blob \(digest.hex) holds an upload whose push to a backend is pending; it is kept until the push ends"
        case let .beingRead(digest): "blob \(digest.hex) is being read; retry when the downloads end"
        case let .notCached(what): "\(what) is not cached here"
        }
    }
}

/// The blobs on disk as the eviction engine sees them: recency, size, what must stay, and
/// room reserved for fills and uploads.
///
/// A fill reserves its image's size before it starts; when the reservation would cross the
/// high watermark, least recently used blobs are evicted down to the low one. Blobs that are
/// pinned, being read, or waiting for their push are never chosen. Only Depot's own bytes
/// count; `minimumFreeBytes` guards the filesystem as a whole. Used bytes plus reservations
/// never exceed the budget.
final class DiskBudget: Sendable {
    /// The byte budget; nil keeps every blob (eviction only on the operator's request or to
    /// keep `minimumFreeBytes` free).
    let watermarks: Watermarks?
    /// Free space the filesystem of the data directory must keep.
    let minimumFreeBytes: UInt64?
    private let store: BlobStore
    private let catalog: Catalog
    private let logger: Logger

    private struct State {
        var index = LRUIndex()
        var reserved: UInt64 = 0
        var readers: [Digest: Int] = [:]
        var pinned: Set<Digest> = []
        /// Blobs a staged or pending push still needs (the only copy of acknowledged bytes),
        /// with the pushes (`cloud|image`) that need each: one push's end never frees a blob
        /// another push still needs.
        var held: [Digest: Set<String>] = [:]
        /// Blobs chosen for eviction whose rows and file are being removed now.
        var evicting: Set<Digest> = []
        /// Bytes of blobs taken out of the index for eviction whose files are not gone yet:
        /// still on disk, so not yet room for a reservation (another fill's temporary file
        /// would otherwise exceed the budget on disk while the unlinks run).
        var unlinking: UInt64 = 0
        var evictions = 0
        var evictedBytes: UInt64 = 0

        func mustKeep(_ digest: Digest) -> Bool {
            pinned.contains(digest) || held[digest] != nil || readers[digest] != nil
        }
    }

    private let state = Mutex(State())

    /// Loads the recency order from the Catalog (oldest access first).
    init(watermarks: Watermarks?, minimumFreeBytes: UInt64? = nil, store: BlobStore, catalog: Catalog, logger: Logger) throws {
        self.watermarks = watermarks
        self.minimumFreeBytes = minimumFreeBytes
        self.store = store
        self.catalog = catalog
        self.logger = logger
        let blobs = try catalog.allBlobs()
        let pushes = try catalog.pushes(in: [.staged, .pending])
        let orphans = try Self.adoptFilesWithoutRow(known: Set(blobs.map(\.digest)), store: store, catalog: catalog, logger: logger)
        state.withLock { state in
            for push in pushes { state.held[push.digest, default: []].insert(Self.key(push.cloud, push.imageID)) }
            // Oldest first: an adopted file is the first to go when room is needed.
            for (digest, size) in orphans { state.index.touch(digest, size: size) }
            for blob in blobs {
                state.index.touch(blob.digest, size: UInt64(blob.size))
                if blob.pinned { state.pinned.insert(blob.digest) }
            }
        }
    }

    /// Records blob files that no Catalog row names, as ordinary cache entries.
    ///
    /// A crash between a blob's file and its row leaves one: an upload whose blob was published
    /// but not yet recorded (it was never acknowledged), or an eviction that removed the row but
    /// not the file. The name is the verified SHA-256 (files are published only after it), so
    /// the bytes are good; SHA-512 and MD5 are filled in when needed. Adopting rather than
    /// deleting keeps a store whose Catalog was lost for `depot fsck` to rebuild.
    static func adoptFilesWithoutRow(known: Set<Digest>, store: BlobStore, catalog: Catalog, logger: Logger) throws -> [(Digest, UInt64)] {
        var adopted: [(Digest, UInt64)] = []
        for digest in try store.allDigests() where !known.contains(digest) {
            let path = store.path(for: digest)
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            let size = UInt64(info.st_size)
            try catalog.recordBlob(CommittedBlob(digest: digest, size: size, digests: [.sha256: digest], deduplicated: false, path: path))
            adopted.append((digest, size))
        }
        if !adopted.isEmpty {
            logger.warning("adopted blob files without a catalog row (left by a crash)", metadata: ["blobs": "\(adopted.count)"])
        }
        return adopted
    }

    /// Bytes held by committed blobs, and reserved by running fills.
    var usage: (used: UInt64, reserved: UInt64) { state.withLock { ($0.index.totalBytes, $0.reserved) } }

    /// What the engine holds, for stats.
    var counts: (blobs: Int, pinned: Int, held: Int, evictions: Int, evictedBytes: UInt64) {
        state.withLock { ($0.index.count, $0.pinned.count, $0.held.count, $0.evictions, $0.evictedBytes) }
    }

    /// Bytes that eviction may not take: pinned blobs, and blobs whose push is pending (a
    /// blob both pinned and held counts as pinned), for the budget gauges.
    var keptBytes: (pinned: UInt64, pushHeld: UInt64) {
        state.withLock { state in
            let pinned = state.pinned.reduce(UInt64(0)) { $0 + (state.index.size(of: $1) ?? 0) }
            let held = state.held.keys.reduce(UInt64(0)) { $0 + (state.pinned.contains($1) ? 0 : state.index.size(of: $1) ?? 0) }
            return (pinned, held)
        }
    }

    /// Blobs from least to most recently used.
    var recencyOrder: [Digest] { state.withLock { $0.index.order } }

    func isPinned(_ digest: Digest) -> Bool { state.withLock { $0.pinned.contains(digest) } }

    /// The size the Catalog recorded for a blob (kept in memory for the hit path).
    func recordedSize(of digest: Digest) -> UInt64? { state.withLock { $0.index.size(of: digest) } }

    /// Takes a blob whose bytes went bad out of the budget, whatever holds it: it is moved to
    /// quarantine, not kept. False when an eviction or another withdrawal has it already.
    /// Holds wait until `endWithdrawal`.
    func withdraw(_ digest: Digest) -> Bool {
        let (taken, used) = state.withLock { state -> (Bool, UInt64) in
            guard !state.evicting.contains(digest) else { return (false, state.index.totalBytes) }
            state.index.remove(digest)
            state.evicting.insert(digest)
            state.held[digest] = nil
            return (true, state.index.totalBytes)
        }
        if taken { Gauge(label: "depot_cache_used_bytes").record(Double(used)) }
        return taken
    }

    func endWithdrawal(_ digest: Digest) {
        _ = state.withLock { $0.evicting.remove(digest) }
    }

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

    static func key(_ cloud: String, _ imageID: String) -> String { "\(cloud)|\(imageID)" }

    /// Keeps a blob until `release`: the push of `imageID` to `cloud` still needs it.
    ///
    /// An eviction of the blob under way is waited for. Then the caller must check that the
    /// file is still there (unless it held the blob before publishing it, as uploads do): a
    /// blob deduplicated against may have been evicted in the moment before this hold, and
    /// from here on it cannot be.
    func hold(_ digest: Digest, cloud: String, imageID: String) async {
        while !tryHold(digest, key: Self.key(cloud, imageID)) { try? await Task.sleep(for: .milliseconds(2)) }
    }

    /// `hold` for a thread that may block (an upload's writer thread), under any key that
    /// names the holder.
    func holdBlocking(_ digest: Digest, key: String) {
        while !tryHold(digest, key: key) { usleep(2000) }
    }

    private func tryHold(_ digest: Digest, key: String) -> Bool {
        state.withLock { state -> Bool in
            guard !state.evicting.contains(digest) else { return false }
            state.held[digest, default: []].insert(key)
            return true
        }
    }

    /// The push of `imageID` to `cloud` no longer needs the blob; releasing twice is harmless.
    func release(_ digest: Digest, cloud: String, imageID: String) {
        release(digest, key: Self.key(cloud, imageID))
    }

    func release(_ digest: Digest, key: String) {
        state.withLock { state in
            guard var holders = state.held[digest] else { return }
            holders.remove(key)
            state.held[digest] = holders.isEmpty ? nil : holders
        }
    }

    /// Pins or unpins a blob (recorded in the Catalog, so it lasts across restarts).
    func setPinned(_ digest: Digest, _ pinned: Bool) throws {
        try catalog.setPinned(digest, pinned)
        state.withLock { state in
            if pinned { state.pinned.insert(digest) } else { state.pinned.remove(digest) }
        }
    }

    /// Free bytes of the data directory's filesystem.
    func freeDiskBytes() -> UInt64? {
        var info = statvfs()
        guard statvfs(store.root, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    /// Reserves room for `bytes`, evicting least recently used blobs when the high watermark
    /// (or the free-space floor) would be crossed.
    ///
    /// - Returns: the evicted blobs' digests (so callers can forget them).
    /// - Throws: `CacheError.budgetExhausted` when the bytes cannot fit even after evicting
    ///   everything that may go.
    ///
    /// - Parameter isFill: a fill may only take up to `fillShare` of the budget with the other
    ///   running fills: beyond that, many cold images at once would evict the hot ones to make
    ///   room for bytes that are not even there yet (the image is then served without a copy).
    ///   Uploads are never refused for it: their bytes must be kept.
    func reserve(_ bytes: UInt64, isFill: Bool = false) throws(CacheError) -> [Digest] {
        let freeNow = minimumFreeBytes == nil ? nil : freeDiskBytes()
        // Decided under the lock: read afterwards, the usage may have changed.
        let outcome: Result<[(digest: Digest, size: UInt64)], CacheError> = state.withLock { state in
            let used = state.index.totalBytes + state.reserved + state.unlinking
            if isFill, let budget = watermarks?.budget, state.reserved > 0,
               Double(state.reserved + bytes) > Double(budget) * Self.fillShare {
                return .failure(.budgetExhausted(needed: bytes, budget: budget, used: used))
            }
            // Down to the low watermark when the high one would be crossed; that is always at
            // least what fitting needs, so falling short of fitting means it cannot fit.
            var need = watermarks?.bytesToFree(used: used, incoming: bytes) ?? 0
            var floorNeed: UInt64 = 0
            if let minimum = minimumFreeBytes, let free = freeNow {
                // Reserved bytes are not on disk yet; they will be.
                let after = Int64(free) - Int64(state.reserved) - Int64(bytes)
                if after < Int64(minimum) { floorNeed = UInt64(Int64(minimum) - after) }
                need = max(need, floorNeed)
            }
            let chosen = need > 0 ? state.index.victims(toFree: need, mustKeep: state.mustKeep) : []
            let freed = chosen.reduce(0) { $0 + $1.size }
            if let budget = watermarks?.budget, used + bytes > budget + freed {
                return .failure(.budgetExhausted(needed: bytes, budget: budget, used: used))
            }
            if freed < floorNeed { return .failure(.diskFloor(needed: bytes, minimumFree: minimumFreeBytes ?? 0)) }
            for victim in chosen {
                state.index.remove(victim.digest)
                state.evicting.insert(victim.digest)
                state.unlinking += victim.size
            }
            state.reserved += bytes
            return .success(chosen)
        }
        let victims: [(digest: Digest, size: UInt64)]
        switch outcome {
        case let .success(chosen): victims = chosen
        case let .failure(error): throw error
        }
        for victim in victims { evict(victim.digest, size: victim.size) }
        return victims.map(\.digest)
    }

    /// The part of the budget running fills may reserve together (one fill alone may take it all).
    static let fillShare = 0.5

    /// A fill ended: its reservation becomes the blob (or is returned, on failure).
    ///
    /// A blob deduplicated against one being evicted (or just evicted) is not counted: its
    /// file is gone, and an index entry for it would only be a phantom.
    func settle(reserved bytes: UInt64, committed blob: CommittedBlob?) {
        let exists = blob.map { store.contains($0.digest) } ?? false
        let used = state.withLock { state in
            state.reserved -= min(bytes, state.reserved)
            if let blob, exists, !state.evicting.contains(blob.digest) { state.index.touch(blob.digest, size: blob.size) }
            return state.index.totalBytes
        }
        Gauge(label: "depot_cache_used_bytes").record(Double(used))
    }

    /// Evicts one blob now, on the operator's request.
    func evictNow(_ digest: Digest) throws(EvictionRefusal) -> UInt64 {
        let size: UInt64? = try state.withLock { state throws(EvictionRefusal) -> UInt64? in
            if state.pinned.contains(digest) { throw .pinned(digest) }
            if state.held[digest] != nil { throw .pushPending(digest) }
            if state.readers[digest] != nil { throw .beingRead(digest) }
            let size = state.index.remove(digest)
            if let size {
                state.evicting.insert(digest)
                state.unlinking += size
            }
            return size
        }
        guard let size else { throw .notCached(digest.hex) }
        evict(digest, size: size)
        return size
    }

    /// Evicts least recently used blobs: down to the low watermark (`toLowWatermark`), or
    /// every blob that may go.
    func prune(everything: Bool) -> [(digest: Digest, size: UInt64)] {
        let victims = state.withLock { state -> [(digest: Digest, size: UInt64)] in
            let target: UInt64
            if everything {
                target = state.index.totalBytes
            } else if let watermarks {
                let low = UInt64(Double(watermarks.budget) * watermarks.low)
                target = state.index.totalBytes + state.reserved > low ? state.index.totalBytes + state.reserved - low : 0
            } else {
                target = 0
            }
            guard target > 0 else { return [] }
            let chosen = state.index.victims(toFree: target, mustKeep: state.mustKeep)
            for victim in chosen {
                state.index.remove(victim.digest)
                state.evicting.insert(victim.digest)
                state.unlinking += victim.size
            }
            return chosen
        }
        for victim in victims { evict(victim.digest, size: victim.size) }
        return victims
    }

    /// Removes a blob: first its Catalog rows, so no request resolves to it any more, then
    /// the file. A crash in between leaves an unindexed file for fsck, never an index entry
    /// that points at nothing. Holds wait until this is done (see `hold`).
    private func evict(_ digest: Digest, size: UInt64) {
        defer {
            state.withLock { state in
                state.evicting.remove(digest)
                state.unlinking -= min(size, state.unlinking)
            }
        }
        do {
            try catalog.removeBlob(digest)
            // A phantom entry (its file already gone) has nothing left to remove.
            if store.contains(digest) { try store.remove(digest) }
            let used = state.withLock { state in
                state.evictions += 1
                state.evictedBytes += size
                return state.index.totalBytes
            }
            Counter(label: "depot_evictions_total").increment()
            Counter(label: "depot_evicted_bytes_total").increment(by: Int(size))
            Gauge(label: "depot_cache_used_bytes").record(Double(used))
            logger.info("evicted", metadata: ["blob": "\(digest.hex)", "size": "\(size)"])
        } catch {
            logger.error("eviction failed", metadata: ["blob": "\(digest.hex)", "error": "\(error)"])
        }
    }
}
