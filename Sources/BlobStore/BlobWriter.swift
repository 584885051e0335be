import CFileIO
import Dispatch
import Glibc
import Synchronization

/// Streams bytes into a temporary file while hashing them, then commits the blob atomically.
///
/// SHA-256 is always computed (it names the blob); SHA-512 and MD5 are computed in the same pass
/// when asked for. Bytes are staged a slot (1 MiB) at a time: each full slot is hashed on one
/// lane per digest (`HashLanes`) while it is written to the file and the next one is staged, so
/// ingest runs at the speed of the slowest hash rather than of the hashes and the write one
/// after the other. Writeback to disk is started every few MiB, so `commit`'s fsync does not
/// have the whole file left to flush.
///
/// A writer is used by one thread at a time. Dropping it without `commit` discards the bytes.
public final class BlobWriter {
    /// The temporary file the bytes go to until `commit`.
    public let temporaryPath: String
    /// Bytes in the temporary file so far. Bytes staged for the next slot are counted once it
    /// is full, or at `flush` or `commit`.
    public private(set) var bytesWritten: UInt64 = 0
    /// Bytes accepted by `write`, staged or in the file.
    private var bytesAccepted: UInt64 = 0

    private let store: BlobStore
    private let expectation: BlobExpectation
    private let lanes: HashLanes
    private let fd: Int32
    private var isOpen = true
    private var writebackFrom: UInt64 = 0

    /// How much written data may wait before writeback is started for it.
    static let writebackInterval: UInt64 = 8 << 20

    init(store: BlobStore, expectation: BlobExpectation, extraAlgorithms: Set<DigestAlgorithm>) throws(BlobStoreError) {
        var algorithms = extraAlgorithms.union(expectation.digests.map(\.algorithm))
        algorithms.remove(.sha256)
        self.lanes = HashLanes(hashers: [DigestHasher(.sha256)] + algorithms.sorted().map { DigestHasher($0) })
        self.store = store
        self.expectation = expectation
        let name = String(UInt64.random(in: .min ... .max), radix: 16) + String(UInt32.random(in: .min ... .max), radix: 16)
        self.temporaryPath = "\(store.tmpRoot)/\(name).partial"
        self.fd = try POSIX.open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        // Another process opening the store skips locked temp files instead of deleting them.
        _ = flock(fd, LOCK_EX | LOCK_NB)
        if let size = expectation.size, size > 0 {
            // Claim the space now: a full disk fails before any byte is received.
            let rc = posix_fallocate(fd, 0, off_t(size))
            if rc != 0 && rc != EOPNOTSUPP && rc != EINVAL {
                discard()
                throw .fromErrno("fallocate", path: temporaryPath, code: rc)
            }
        }
    }

    deinit {
        if isOpen { discard() }
    }

    /// Bytes `write` must still take before the next ones reach the file (and `bytesWritten`
    /// grows): the room left in the slot being staged, 1 MiB at most. A caller that feeds the
    /// writer from a slow source gains nothing by handing it fewer at a time.
    public var bytesUntilNextSlot: Int { lanes.roomInSlot }

    /// Appends bytes. They reach the file a slot at a time (see `bytesWritten`). On any failure
    /// the temporary file is removed and the writer is closed.
    public func write(_ buffer: UnsafeRawBufferPointer) throws(BlobStoreError) {
        guard isOpen else { throw .writerClosed(path: temporaryPath) }
        if buffer.isEmpty { return }
        let total = bytesAccepted + UInt64(buffer.count)
        if let expected = expectation.size, total > expected {
            discard()
            throw .sizeMismatch(expected: expected, actual: total)
        }
        do {
            try lanes.append(buffer) { (slot) throws(BlobStoreError) in try writeToFile(slot) }
        } catch {
            discard()
            throw error
        }
        bytesAccepted = total
    }

    /// Appends bytes from an array.
    public func write(_ bytes: [UInt8]) throws(BlobStoreError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(BlobStoreError) in try write(buffer) }
        }
        try result.get()
    }

    /// Writes the staged bytes to the file, so that `bytesWritten` counts every byte accepted.
    public func flush() throws(BlobStoreError) {
        guard isOpen else { throw .writerClosed(path: temporaryPath) }
        do {
            try lanes.flush { (slot) throws(BlobStoreError) in try writeToFile(slot) }
        } catch {
            discard()
            throw error
        }
    }

    private func writeToFile(_ slot: UnsafeRawBufferPointer) throws(BlobStoreError) {
        try POSIX.writeAll(fd, slot, path: temporaryPath)
        bytesWritten += UInt64(slot.count)
        if bytesWritten - writebackFrom >= Self.writebackInterval {
            _ = depot_start_writeback(fd, Int64(writebackFrom), Int64(bytesWritten - writebackFrom))
            writebackFrom = bytesWritten
        }
    }

    /// Checks size and digests, makes the bytes durable, and moves them into place.
    ///
    /// When the store already holds the same bytes, the existing blob is kept and the new copy
    /// is discarded (`deduplicated` is true). On a mismatch nothing is committed and the error
    /// says what was expected and what arrived.
    /// - Parameter beforePublishing: runs once the bytes are verified and their name known,
    ///   before the store is looked at: a caller that must keep the blob (an upload) holds it
    ///   there, so that an eviction cannot remove the copy it is about to deduplicate against.
    public func commit(beforePublishing: (Digest) -> Void = { _ in }) throws(BlobStoreError) -> CommittedBlob {
        try flush()
        defer { if isOpen { discard() } }
        if let expected = expectation.size, expected != bytesWritten {
            throw .sizeMismatch(expected: expected, actual: bytesWritten)
        }
        let digests = lanes.finish()
        for expected in expectation.digests {
            let actual = digests[expected.algorithm]!
            if actual != expected { throw .digestMismatch(expected: expected, actual: actual) }
        }
        let digest = digests[.sha256]!
        beforePublishing(digest)
        let finalPath = store.path(for: digest)
        var deduplicated = access(finalPath, F_OK) == 0
        if !deduplicated {
            try POSIX.fsync(fd, path: temporaryPath)
            let (first, second) = store.shardDirectories(for: digest)
            if try POSIX.mkdir(first) { try POSIX.fsyncDirectory(store.blobsRoot) }
            if try POSIX.mkdir(second) { try POSIX.fsyncDirectory(first) }
            // link(2) never replaces an existing name: of two writers of the same bytes, one
            // places the blob and the other finds it there.
            if try POSIX.linkIfAbsent(temporaryPath, finalPath) {
                try POSIX.fsyncDirectory(second)
            } else {
                deduplicated = true
            }
        }
        discard()
        return CommittedBlob(digest: digest, size: bytesWritten, digests: digests, deduplicated: deduplicated, path: finalPath)
    }

    /// Gives up: removes the temporary file. Safe to call more than once.
    public func abort() {
        if isOpen { discard() }
    }

    private func discard() {
        isOpen = false
        Glibc.unlink(temporaryPath)
        Glibc.close(fd)
    }
}

/// Carries values into hash lanes, which only read them while their owner keeps them alive.
struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
