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
    case beingCommitted(Digest)
    case notCached(String)

    public var description: String {
        switch self {
        case let .pinned(digest): "blob \(digest.hex) is pinned; unpin it first"
        case let .pushPending(digest): "blob \(digest.hex) holds an upload whose push to a backend is pending; it is kept until the push ends"
        case let .beingRead(digest): "blob \(digest.hex) is being read; retry when the downloads end"
        case let .beingCommitted(digest): "blob \(digest.hex) is being committed by a fill of an image with the same bytes; retry in a moment"
        case let .notCached(what): "\(what) is not cached here"
        }
    }
}

/// The blobs on disk as the eviction engine sees them, and the removal of the ones it chooses.
///
/// `BudgetStateMachine` decides under one lock; this owner carries out what it returns outside
/// the lock: it removes evicted blobs (Catalog rows first, then the file) and resumes the holds
/// that waited for a removal to end. See `BudgetStateMachine` for the rules.
final class DiskBudget: Sendable {
    private let store: BlobStore
    private let catalog: Catalog
    /// Where its Catalog writes run, never the caller's thread: evictions' removals on
    /// `DiskPools.evictions`, pins on `requests`.
    private let disk: DiskPools
    private let logger: Logger
    private let state: Mutex<BudgetStateMachine<HoldWaiter>>

    /// A hold or a reservation waiting for an eviction to end: a task, or an upload's writer
    /// thread.
    enum HoldWaiter: Sendable {
        case task(CheckedContinuation<Void, Never>)
        case thread(DispatchSemaphore)

        func resume() {
            switch self {
            case let .task(continuation): continuation.resume()
            case let .thread(semaphore): semaphore.signal()
            }
        }
    }

    /// Loads the recency order from the Catalog (oldest access first).
    init(watermarks: Watermarks?, minimumFreeBytes: UInt64? = nil, store: BlobStore, catalog: Catalog, disk: DiskPools, logger: Logger) throws {
        self.store = store
        self.catalog = catalog
        self.disk = disk
        self.logger = logger
        let blobs = try catalog.allBlobs()
        let pushes = try catalog.pushes(in: [.staged, .pending])
        let orphans = try Self.adoptFilesWithoutRow(known: Set(blobs.map(\.digest)), store: store, catalog: catalog, logger: logger)
        var machine = BudgetStateMachine<HoldWaiter>(watermarks: watermarks, minimumFreeBytes: minimumFreeBytes)
        for push in pushes { machine.load(hold: push.digest, by: .push(ImageKey(cloud: push.cloud, imageID: push.imageID))) }
        // Oldest first: an adopted file is the first to go when room is needed.
        for (digest, size) in orphans { machine.load(digest, size: size) }
        for blob in blobs { machine.load(blob.digest, size: UInt64(blob.size), pinned: blob.pinned) }
        state = Mutex(machine)
    }

    var watermarks: Watermarks? { state.withLock { $0.watermarks } }
    var minimumFreeBytes: UInt64? { state.withLock { $0.minimumFreeBytes } }

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
    var usage: (used: UInt64, reserved: UInt64) { state.withLock { ($0.usedBytes, $0.reserved) } }

    /// What the engine holds, for stats.
    var counts: (blobs: Int, pinned: Int, held: Int, evictions: Int, evictedBytes: UInt64) {
        state.withLock { ($0.blobCount, $0.pinnedCount, $0.heldCount, $0.evictions, $0.evictedBytes) }
    }

    /// Bytes that eviction may not take, for the budget gauges.
    var keptBytes: (pinned: UInt64, pushHeld: UInt64) { state.withLock { $0.keptBytes } }

    /// Blobs from least to most recently used.
    var recencyOrder: [Digest] { state.withLock { $0.recencyOrder } }

    func isPinned(_ digest: Digest) -> Bool { state.withLock { $0.isPinned(digest) } }

    /// The size the Catalog recorded for a blob (kept in memory for the hit path).
    func recordedSize(of digest: Digest) -> UInt64? { state.withLock { $0.recordedSize(of: digest) } }

    func touch(_ digest: Digest) { state.withLock { $0.touch(digest) } }
    func beginRead(_ digest: Digest) { state.withLock { $0.beginRead(digest) } }
    /// `BudgetStateMachine.beginHit`: one lock for what `recordedSize`, `touch` and
    /// `beginRead` take three times.
    func beginHit(_ digest: Digest, size: UInt64) -> Bool { state.withLock { $0.beginHit(digest, size: size) } }
    func endRead(_ digest: Digest) { state.withLock { $0.endRead(digest) } }

    /// Takes a blob whose bytes went bad out of the budget, whatever holds it: it is moved to
    /// quarantine, not kept. False when an eviction or another withdrawal has it already.
    /// Holds wait until `endWithdrawal`.
    func withdraw(_ digest: Digest) -> Bool {
        let (taken, used) = state.withLock { ($0.withdraw(digest), $0.usedBytes) }
        if taken { Gauge(label: "depot_cache_used_bytes").record(Double(used)) }
        return taken
    }

    func endWithdrawal(_ digest: Digest) {
        for waiter in state.withLock({ $0.withdrawalEnded(digest) }) { waiter.resume() }
    }

    /// Keeps a blob until `release`: the holder (a push) still needs it.
    ///
    /// An eviction of the blob under way is waited for. Then the caller must check that the
    /// file is still there (unless it held the blob before publishing it, as uploads do): a
    /// blob deduplicated against may have been evicted in the moment before this hold, and
    /// from here on it cannot be.
    func hold(_ digest: Digest, by holder: BlobHolder) async {
        await withCheckedContinuation { continuation in
            if state.withLock({ $0.hold(digest, by: holder, waiter: .task(continuation)) }) == .held { continuation.resume() }
        }
    }

    /// `hold` for a thread that may block (an upload's writer thread).
    func holdBlocking(_ digest: Digest, by holder: BlobHolder) {
        let semaphore = DispatchSemaphore(value: 0)
        if state.withLock({ $0.hold(digest, by: holder, waiter: .thread(semaphore)) }) == .wait { semaphore.wait() }
    }

    /// The holder no longer needs the blob; releasing twice is harmless.
    func release(_ digest: Digest, by holder: BlobHolder) {
        state.withLock { $0.release(digest, by: holder) }
    }

    /// Pins or unpins a blob (recorded in the Catalog, so it lasts across restarts).
    func setPinned(_ digest: Digest, _ pinned: Bool) async throws {
        let catalog = catalog
        // Syncs the WAL and may wait seconds for the lock: not on the cooperative pool.
        try await disk.run { () throws in try catalog.setPinned(digest, pinned) }
        state.withLock { $0.setPinned(digest, pinned) }
    }

    /// Free bytes of the data directory's filesystem.
    func freeDiskBytes() -> UInt64? {
        var info = statvfs()
        guard statvfs(store.root, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    /// Reserves room for `bytes`, evicting least recently used blobs when the high watermark
    /// (or the free-space floor) would be crossed, and waiting while the room is still taken
    /// by blobs being removed.
    ///
    /// - Parameter isFill: see `BudgetStateMachine.reserve`.
    /// - Returns: the evicted blobs' digests (so callers can forget them).
    /// - Throws: `CacheError.budgetExhausted` when the bytes cannot fit even after evicting
    ///   everything that may go; `.diskFloor` when the free-space floor cannot be kept.
    func reserve(_ bytes: UInt64, isFill: Bool = false) async throws(CacheError) -> [Digest] {
        while true {
            let free = minimumFreeBytes == nil ? nil : freeDiskBytes()
            var action = BudgetStateMachine<HoldWaiter>.ReserveAction.wait
            await withCheckedContinuation { continuation in
                action = state.withLock { $0.reserve(bytes, isFill: isFill, freeDiskBytes: free, waiter: .task(continuation)) }
                if case .wait = action { return }
                continuation.resume()
            }
            switch action {
            case .wait:
                continue
            case let .refused(error):
                throw error
            case let .reserved(victims):
                if !victims.isEmpty { await evict(victims) }
                return victims.map(\.digest)
            }
        }
    }

    /// A reservation ended: its bytes become the blob (or are returned, on failure).
    func settle(reserved bytes: UInt64, committed blob: CommittedBlob?) {
        let exists = blob.map { store.contains($0.digest) } ?? false
        let used = state.withLock { state in
            state.settle(reserved: bytes, committed: blob.map { EvictionVictim(digest: $0.digest, size: $0.size) }, fileExists: exists)
            return state.usedBytes
        }
        Gauge(label: "depot_cache_used_bytes").record(Double(used))
    }

    /// Evicts one blob now, on the operator's request.
    func evictNow(_ digest: Digest) async throws(EvictionRefusal) -> UInt64 {
        let victim = try state.withLock { state throws(EvictionRefusal) in try state.evictNow(digest) }
        await evict([victim])
        return victim.size
    }

    /// Evicts least recently used blobs: down to the low watermark, or every blob that may go.
    func prune(everything: Bool) async -> [EvictionVictim] {
        let victims = state.withLock { $0.prune(everything: everything) }
        if !victims.isEmpty { await evict(victims) }
        return victims
    }

    /// Removes the blobs the state machine chose, on the eviction pool: a SQLite write, an
    /// unlink and a directory fsync each, which must not hold a cooperative thread or a
    /// request's event loop.
    private func evict(_ victims: [EvictionVictim]) async {
        await disk.runEviction { [self] in
            for victim in victims { evict(victim) }
        }
    }

    /// Removes a blob: first its Catalog rows, so no request resolves to it any more, then
    /// the file. A crash in between leaves an unindexed file for fsck, never an index entry
    /// that points at nothing. Holds wait until this is done (see `hold`).
    private func evict(_ victim: EvictionVictim) {
        var removed = false
        do {
            try catalog.removeBlob(victim.digest)
            // A phantom entry (its file already gone) has nothing left to remove.
            if store.contains(victim.digest) { try store.remove(victim.digest) }
            removed = true
        } catch {
            logger.error("eviction failed", metadata: ["blob": "\(victim.digest.hex)", "error": "\(error)"])
        }
        let (waiters, used) = state.withLock { ($0.evictionEnded(victim, removed: removed), $0.usedBytes) }
        for waiter in waiters { waiter.resume() }
        guard removed else { return }
        Counter(label: "depot_evictions_total").increment()
        Counter(label: "depot_evicted_bytes_total").increment(by: Int(victim.size))
        Gauge(label: "depot_cache_used_bytes").record(Double(used))
        logger.info("evicted", metadata: ["blob": "\(victim.digest.hex)", "size": "\(victim.size)"])
    }
}
