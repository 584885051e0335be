import BlobStore
import Eviction

/// What keeps a blob from eviction besides pins and readers.
package enum BlobHolder: Hashable, Sendable {
    /// The push of an image still needs the blob: it is the only copy of acknowledged bytes.
    case push(ImageKey)
    /// An upload is publishing the blob, until its push holds it (named by the request id).
    case upload(String)
    /// A fill is publishing the blob (its bytes, or a copy already stored that it deduplicated
    /// against), until the image's Catalog row maps to it.
    case fill(ImageKey)
}

/// A blob chosen for eviction, with the bytes it frees.
package struct EvictionVictim: Equatable, Sendable {
    package let digest: Digest
    package let size: UInt64

    package init(digest: Digest, size: UInt64) {
        self.digest = digest
        self.size = size
    }
}

/// The disk budget's decisions, without I/O: recency, sizes, what must stay, room reserved
/// for fills and uploads, and holds waiting for an eviction to end.
///
/// A reservation that would cross the high watermark (or the free-space floor) chooses least
/// recently used blobs down to the low one; the owner removes them (Catalog rows, then files)
/// outside the lock and reports each with `evictionEnded`. Blobs that are pinned, being read,
/// or held for a push are never chosen. Used bytes, reservations and the blobs still being
/// removed never exceed the budget: a reservation that fits only once removals under way end
/// waits for them.
///
/// `Waiter` is what the owner resumes when an eviction ends: a hold that waited for it (taken
/// by then), or a reservation that waited for room (to be asked again).
package struct BudgetStateMachine<Waiter> {
    /// The byte budget; nil keeps every blob (eviction only on the operator's request or to
    /// keep `minimumFreeBytes` free).
    package let watermarks: Watermarks?
    /// Free space the filesystem of the data directory must keep.
    package let minimumFreeBytes: UInt64?
    /// The part of the budget running fills may reserve together (one fill alone may take it
    /// all): beyond it, many cold images at once would evict the hot ones to make room for
    /// bytes that are not even there yet.
    package static var fillShare: Double { 0.5 }

    private var index = LRUIndex()
    /// Bytes reserved by running fills and uploads, not yet committed.
    package private(set) var reserved: UInt64 = 0
    private var readers: [Digest: Int] = [:]
    private var pinned: Set<Digest> = []
    /// Blobs a staged or pending push (or an upload about to hand over to one) still needs,
    /// with what needs each: one push's end never frees a blob another push still needs.
    private var held: [Digest: Set<BlobHolder>] = [:]
    /// Blobs chosen for eviction (or withdrawn) whose rows and file are being removed now, with
    /// the bytes they still take on disk (none for a withdrawn blob: it leaves the store).
    private var evicting: [Digest: UInt64] = [:]
    /// The bytes of `evicting`.
    package private(set) var evictingBytes: UInt64 = 0
    /// Holds waiting for the removal of their blob to end.
    private var waiting: [Digest: [(holder: BlobHolder, waiter: Waiter)]] = [:]
    /// Reservations waiting for removals under way to end.
    private var waitingForRoom: [Waiter] = []
    package private(set) var evictions = 0
    package private(set) var evictedBytes: UInt64 = 0

    package init(watermarks: Watermarks?, minimumFreeBytes: UInt64?) {
        self.watermarks = watermarks
        self.minimumFreeBytes = minimumFreeBytes
    }

    // MARK: Loading and reading

    /// Adds a blob known at start; call oldest access first.
    package mutating func load(_ digest: Digest, size: UInt64, pinned isPinned: Bool = false) {
        index.touch(digest, size: size)
        if isPinned { pinned.insert(digest) }
    }

    /// Adds a hold known at start (a staged or pending push).
    package mutating func load(hold digest: Digest, by holder: BlobHolder) {
        held[digest, default: []].insert(holder)
    }

    /// Bytes held by committed blobs.
    package var usedBytes: UInt64 { index.totalBytes }
    package var blobCount: Int { index.count }
    package var pinnedCount: Int { pinned.count }
    package var heldCount: Int { held.count }
    /// Blobs from least to most recently used.
    package var recencyOrder: [Digest] { index.order }
    package func isPinned(_ digest: Digest) -> Bool { pinned.contains(digest) }
    package func recordedSize(of digest: Digest) -> UInt64? { index.size(of: digest) }

    /// Bytes eviction may not take: pinned blobs, and blobs held for a push (a blob both
    /// pinned and held counts as pinned).
    package var keptBytes: (pinned: UInt64, pushHeld: UInt64) {
        let pinnedBytes = pinned.reduce(UInt64(0)) { $0 + (index.size(of: $1) ?? 0) }
        let heldBytes = held.keys.reduce(UInt64(0)) { $0 + (pinned.contains($1) ? 0 : index.size(of: $1) ?? 0) }
        return (pinnedBytes, heldBytes)
    }

    private func mustKeep(_ digest: Digest) -> Bool {
        pinned.contains(digest) || held[digest] != nil || readers[digest] != nil
    }

    // MARK: Use

    package mutating func touch(_ digest: Digest) { _ = index.touch(digest) }
    package mutating func beginRead(_ digest: Digest) { readers[digest, default: 0] += 1 }

    /// A hit on a blob whose file holds `size` bytes: when that is the size recorded for it,
    /// `touch` and `beginRead` in one; else false, and nothing changes.
    package mutating func beginHit(_ digest: Digest, size: UInt64) -> Bool {
        guard index.touch(digest, ifSize: size) else { return false }
        beginRead(digest)
        return true
    }

    package mutating func endRead(_ digest: Digest) {
        // One lookup of the digest: every hit ends here.
        guard let slot = readers.index(forKey: digest) else { return }
        if readers.values[slot] > 1 { readers.values[slot] -= 1 } else { readers.remove(at: slot) }
    }

    package mutating func setPinned(_ digest: Digest, _ isPinned: Bool) {
        if isPinned { pinned.insert(digest) } else { pinned.remove(digest) }
    }

    // MARK: Reservations

    package enum ReserveAction {
        /// The bytes are reserved; the owner removes `evict` now (and reports each).
        case reserved(evict: [EvictionVictim])
        /// Nothing changed.
        case refused(CacheError)
        /// The bytes fit once the blobs being removed are gone (their files still take the
        /// room): the waiter is resumed when a removal ends, to ask again.
        case wait
    }

    /// Room for `bytes` more.
    ///
    /// - Parameters:
    ///   - isFill: a fill may only take `fillShare` of the budget with the other running
    ///     fills (the image is then served without a copy); uploads are never refused for it,
    ///     their bytes must be kept.
    ///   - freeDiskBytes: the filesystem's free bytes now, when `minimumFreeBytes` is set.
    package mutating func reserve(_ bytes: UInt64, isFill: Bool, freeDiskBytes: UInt64?, waiter: Waiter) -> ReserveAction {
        let used = index.totalBytes + reserved
        if isFill, let budget = watermarks?.budget, reserved > 0, Double(reserved + bytes) > Double(budget) * Self.fillShare {
            return .refused(.budgetExhausted(needed: bytes, budget: budget, used: used))
        }
        // Down to the low watermark when the high one would be crossed; that is always at least
        // what fitting needs, so falling short of fitting means it cannot fit.
        var need = watermarks?.bytesToFree(used: used, incoming: bytes) ?? 0
        var floorNeed: UInt64 = 0
        if let minimum = minimumFreeBytes, let free = freeDiskBytes {
            // Reserved bytes are not on disk yet; they will be.
            let after = Int64(free) - Int64(reserved) - Int64(bytes)
            if after < Int64(minimum) { floorNeed = UInt64(Int64(minimum) - after) }
            need = max(need, floorNeed)
        }
        let chosen = need > 0 ? index.victims(toFree: need, mustKeep: mustKeep) : []
        let freed = chosen.reduce(0) { $0 + $1.size }
        if let budget = watermarks?.budget, used + bytes > budget + freed {
            return .refused(.budgetExhausted(needed: bytes, budget: budget, used: used))
        }
        if freed < floorNeed { return .refused(.diskFloor(needed: bytes, minimumFree: minimumFreeBytes ?? 0)) }
        if let budget = watermarks?.budget, used + evictingBytes + bytes > budget + freed {
            waitingForRoom.append(waiter)
            return .wait
        }
        reserved += bytes
        return .reserved(evict: take(chosen))
    }

    /// A reservation ended: its bytes become the committed blob, or are returned.
    ///
    /// - Parameter fileExists: whether the blob's file is in place; a blob deduplicated against
    ///   one that is being (or was just) evicted is not counted, it would only be a phantom.
    package mutating func settle(reserved bytes: UInt64, committed blob: EvictionVictim?, fileExists: Bool) {
        reserved -= min(bytes, reserved)
        if let blob, fileExists, evicting[blob.digest] == nil { index.touch(blob.digest, size: blob.size) }
    }

    // MARK: Holds

    package enum HoldAction: Equatable {
        case held
        /// The blob is being removed: the waiter is resumed, holding it, once that ended.
        case wait
    }

    /// Keeps a blob until `release`. After a wait the holder must check the file is still
    /// there: it was being evicted, and from now on it cannot be.
    package mutating func hold(_ digest: Digest, by holder: BlobHolder, waiter: Waiter) -> HoldAction {
        guard evicting[digest] == nil else {
            waiting[digest, default: []].append((holder, waiter))
            return .wait
        }
        held[digest, default: []].insert(holder)
        return .held
    }

    /// Releasing twice is harmless.
    package mutating func release(_ digest: Digest, by holder: BlobHolder) {
        guard var holders = held[digest] else { return }
        holders.remove(holder)
        held[digest] = holders.isEmpty ? nil : holders
    }

    // MARK: Evictions

    /// Evicts one blob now, on the operator's request.
    package mutating func evictNow(_ digest: Digest) throws(EvictionRefusal) -> EvictionVictim {
        if pinned.contains(digest) { throw .pinned(digest) }
        if let holders = held[digest] {
            if holders.allSatisfy({ if case .fill = $0 { true } else { false } }) { throw .beingCommitted(digest) }
            throw .pushPending(digest)
        }
        if readers[digest] != nil { throw .beingRead(digest) }
        guard let size = index.size(of: digest) else { throw .notCached(digest.hex) }
        return take([(digest, size)])[0]
    }

    /// Least recently used blobs down to the low watermark (`everything`: all that may go).
    package mutating func prune(everything: Bool) -> [EvictionVictim] {
        let target: UInt64
        if everything {
            target = index.totalBytes
        } else if let watermarks {
            let low = UInt64(Double(watermarks.budget) * watermarks.low)
            target = index.totalBytes + reserved > low ? index.totalBytes + reserved - low : 0
        } else {
            target = 0
        }
        guard target > 0 else { return [] }
        return take(index.victims(toFree: target, mustKeep: mustKeep))
    }

    private mutating func take(_ chosen: [(digest: Digest, size: UInt64)]) -> [EvictionVictim] {
        for victim in chosen {
            index.remove(victim.digest)
            evicting[victim.digest] = victim.size
            evictingBytes += victim.size
        }
        return chosen.map { EvictionVictim(digest: $0.digest, size: $0.size) }
    }

    /// The owner removed (or failed to remove) a victim's rows and file.
    ///
    /// - Returns: the holds that waited for it, taken now, and the reservations that waited for
    ///   room; resume them.
    package mutating func evictionEnded(_ victim: EvictionVictim, removed: Bool) -> [Waiter] {
        if removed {
            evictions += 1
            evictedBytes += victim.size
        }
        return endRemoval(of: victim.digest)
    }

    /// Takes a blob whose bytes went bad out of the budget, whatever holds it (its holds are
    /// dropped). False when an eviction or another withdrawal has it already.
    package mutating func withdraw(_ digest: Digest) -> Bool {
        guard evicting[digest] == nil else { return false }
        index.remove(digest)
        evicting[digest] = 0
        held[digest] = nil
        return true
    }

    /// The withdrawn blob is quarantined. Returns the holds that waited, taken now, and the
    /// reservations that waited for room.
    package mutating func withdrawalEnded(_ digest: Digest) -> [Waiter] { endRemoval(of: digest) }

    private mutating func endRemoval(of digest: Digest) -> [Waiter] {
        evictingBytes -= evicting.removeValue(forKey: digest) ?? 0
        let granted = waiting.removeValue(forKey: digest) ?? []
        for (holder, _) in granted { held[digest, default: []].insert(holder) }
        defer { waitingForRoom = [] }
        return granted.map(\.waiter) + waitingForRoom
    }
}
