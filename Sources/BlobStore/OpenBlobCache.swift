import Glibc
import Synchronization

/// Open readers of committed blobs, kept between hits so a hit costs one `fstat` instead of
/// `open`, `fstat`, `dup` and two `close`s (nginx's `open_file_cache`).
///
/// Blobs are immutable, so an open descriptor stays right for as long as its file is still the
/// blob's: still linked, and of the size it had. Every lookup checks that with one `fstat` of
/// the kept descriptor, or the reader is dropped and the blob opened anew from its path. A blob
/// has one link (`BlobWriter` removes its temporary name at commit), so a file removed, or
/// replaced by another renamed over its path, has none left; a file truncated in place has
/// another size. Such a file is therefore never served from a stale descriptor.
///
/// A file moved away from its path keeps its link, which `fstat` cannot tell from staying.
/// Removal and quarantine through `BlobStore` (its one move) drop the entry before and after
/// the file goes, and a reader opened while one ran is not kept once its file has left the
/// path (`open`). A blob file moved out of the data directory by hand while Depot runs is
/// served from the kept descriptor, with its own bytes, until the entry goes. A `stat` of the
/// path on every hit caught that too, but walking the path's five components cost about
/// 850 ns a hit on this machine, against 200 ns for the `fstat`.
///
/// At most `capacity` readers are kept; the least recently used goes first. A reader is a
/// reference-counted object that closes its descriptor when the last holder lets go, so dropping
/// an entry never closes a descriptor under a send still in flight.
public final class OpenBlobCache: Sendable {
    /// A kept reader. Its last use is written without the lock, so a hit looks its blob up
    /// once (it took three lookups, each hashing the digest).
    final class Kept: Sendable {
        let reader: BlobReader
        /// When a lookup last returned it, on the cache's use clock (for the least recently used).
        let lastUse: Atomic<UInt64>

        init(reader: BlobReader, lastUse: UInt64) {
            self.reader = reader
            self.lastUse = Atomic(lastUse)
        }
    }

    struct State {
        var entries: [Digest: Kept] = [:]
    }

    /// The most readers (open descriptors) kept.
    public let capacity: Int
    private let state = Mutex(State())
    /// Counts lookups: the order of last use.
    private let clock = Atomic<UInt64>(0)

    /// Runs between a blob's `open` and keeping its reader (tests use it to move the file then).
    private let afterOpen: (@Sendable (Digest) -> Void)?

    public init(capacity: Int) {
        self.capacity = max(0, capacity)
        afterOpen = nil
    }

    init(capacity: Int, afterOpen: @escaping @Sendable (Digest) -> Void) {
        self.capacity = max(0, capacity)
        self.afterOpen = afterOpen
    }

    /// A reader of the blob's file: the kept one while its file is still linked and of the
    /// size it had, else one of the file at the blob's path now (kept for the next hit).
    ///
    /// - Parameter blobPath: the blob's path; asked only when no reader (which knows it) is kept.
    /// - Throws: `.notFound` when no file is at the path; `.io` when it cannot be opened.
    func reader(for digest: Digest, blobPath: () -> String) throws(BlobStoreError) -> BlobReader {
        let kept = state.withLock { $0.entries[digest] }
        if let kept {
            var now = stat()
            if fstat(kept.reader.fileDescriptor, &now) == 0, now.st_nlink > 0, kept.reader.size == UInt64(now.st_size) {
                kept.lastUse.store(clock.wrappingAdd(1, ordering: .relaxed).newValue, ordering: .relaxed)
                return kept.reader
            }
            // Removed, replaced or truncated: this reader is never used again.
            state.withLock { state in
                if state.entries[digest] === kept { state.entries[digest] = nil }
            }
        }
        return try open(digest, path: kept?.reader.path ?? blobPath())
    }

    private func open(_ digest: Digest, path: String) throws(BlobStoreError) -> BlobReader {
        let fd: Int32
        do {
            fd = try POSIX.open(path, O_RDONLY)
        } catch .io(_, _, ENOENT) {
            remove(digest)
            throw .notFound(digest)
        }
        var opened = stat()
        guard Glibc.fstat(fd, &opened) == 0 else {
            let error = BlobStoreError.fromErrno("fstat", path: path)
            Glibc.close(fd)
            throw error
        }
        let reader = BlobReader(digest: digest, path: path, fd: fd, size: UInt64(opened.st_size))
        afterOpen?(digest)
        guard capacity > 0 else { return reader }
        // Dropped outside the lock: the last reference closes a descriptor.
        let kept = Kept(reader: reader, lastUse: clock.wrappingAdd(1, ordering: .relaxed).newValue)
        let evicted = state.withLock { state -> BlobReader? in
            let replaced = state.entries.updateValue(kept, forKey: digest)
            guard replaced == nil, state.entries.count > capacity,
                  let oldest = state.entries.min(by: { $0.value.lastUse.load(ordering: .relaxed) < $1.value.lastUse.load(ordering: .relaxed) })?.key
            else { return replaced?.reader }
            return state.entries.removeValue(forKey: oldest)?.reader
        }
        _ = evicted
        // An eviction may have unlinked the file, or a quarantine moved it away, between our
        // open and the insert. Both drop the entry after the file left its path, so either they
        // saw ours, or the path no longer names the file opened here: such a file is never kept
        // (a hit's `fstat` sees an unlinked file but not a moved one), and the blocks of a
        // deleted one are freed when this send ends. Only a miss pays for this `stat`.
        var now = stat()
        let stillThere = path.withCString { stat($0, &now) } == 0 && now.st_dev == opened.st_dev && now.st_ino == opened.st_ino
        if !stillThere {
            state.withLock { state in
                if state.entries[digest] === kept { state.entries[digest] = nil }
            }
        }
        return reader
    }

    /// Drops the blob's reader; its descriptor closes once no send holds it.
    public func remove(_ digest: Digest) {
        let dropped = state.withLock { $0.entries.removeValue(forKey: digest) }
        _ = dropped
    }

    /// Whether a reader of the blob is kept (for tests).
    public func contains(_ digest: Digest) -> Bool { state.withLock { $0.entries[digest] != nil } }

    /// Readers kept.
    public var count: Int { state.withLock { $0.entries.count } }
}
