import Glibc
import Logging

/// The content-addressed store: every blob is a file named by the SHA-256 of its bytes.
///
/// Layout under the data directory:
/// ```
/// blobs/sha256/ab/cd/abcd…(64 hex)   committed, immutable, verified blobs
/// tmp/                               in-progress writes; never served as complete
/// quarantine/                        blobs whose bytes no longer match their name
/// ```
/// A blob appears under `blobs/` only after its bytes hashed to its name and were fsynced, so a
/// reader never sees a torn or unverified blob. The store is safe to use from many threads and
/// from several processes on one data directory.
public final class BlobStore: Sendable {
    /// The data directory.
    public let root: String
    let blobsRoot: String
    let tmpRoot: String
    let quarantineRoot: String
    let logger: Logger

    /// What opening the store found and cleaned up.
    public let recovery: RecoveryReport
    /// Readers kept open between hits (`openKept`).
    public let openBlobs: OpenBlobCache

    /// Opens (creating if needed) the store in `dataDirectory` and recovers from a crash.
    ///
    /// Temporary files that no live writer holds are removed; files under `blobs/` whose
    /// name is not a digest in its right shard are reported in `recovery`, never served.
    /// - Parameter openBlobLimit: the most blobs `openKept` keeps open between hits.
    public init(dataDirectory: String, openBlobLimit: Int = 128, logger: Logger = Logger(label: "depot.blobstore")) throws(BlobStoreError) {
        let root = dataDirectory.hasSuffix("/") && dataDirectory.count > 1 ? String(dataDirectory.dropLast()) : dataDirectory
        self.root = root
        self.blobsRoot = root + "/blobs/sha256"
        self.tmpRoot = root + "/tmp"
        self.quarantineRoot = root + "/quarantine"
        self.logger = logger
        self.openBlobs = OpenBlobCache(capacity: openBlobLimit)
        for dir in [root, root + "/blobs", blobsRoot, tmpRoot, quarantineRoot] {
            try POSIX.mkdir(dir)
        }
        self.recovery = try Self.recover(tmpRoot: tmpRoot, blobsRoot: blobsRoot)
        if !recovery.removedTemporaryFiles.isEmpty || !recovery.strayFiles.isEmpty {
            logger.warning(
                "recovered blob store",
                metadata: [
                    "removed_temp_files": "\(recovery.removedTemporaryFiles.count)",
                    "removed_temp_bytes": "\(recovery.removedTemporaryBytes)",
                    "stray_files": "\(recovery.strayFiles)",
                ])
        }
    }

    // MARK: Paths

    /// Where the blob with this SHA-256 digest lives (whether or not it exists).
    public func path(for digest: Digest) -> String {
        let hex = digest.hex
        let a = hex.prefix(2), b = hex.dropFirst(2).prefix(2)
        return "\(blobsRoot)/\(a)/\(b)/\(hex)"
    }

    func shardDirectories(for digest: Digest) -> (String, String) {
        let hex = digest.hex
        let first = "\(blobsRoot)/\(hex.prefix(2))"
        return (first, "\(first)/\(hex.dropFirst(2).prefix(2))")
    }

    // MARK: Queries

    /// Whether a committed blob with this digest exists.
    public func contains(_ digest: Digest) -> Bool {
        guard digest.algorithm == .sha256 else { return false }
        return access(path(for: digest), F_OK) == 0
    }

    /// The size of a committed blob.
    public func size(of digest: Digest) throws(BlobStoreError) -> UInt64 {
        try requireBlobName(digest)
        guard let size = try POSIX.fileSize(path(for: digest)) else { throw .notFound(digest) }
        return size
    }

    /// Opens a committed blob for reading.
    public func open(_ digest: Digest) throws(BlobStoreError) -> BlobReader {
        try requireBlobName(digest)
        let path = path(for: digest)
        let fd: Int32
        do {
            fd = try POSIX.open(path, O_RDONLY)
        } catch .io(_, _, ENOENT) {
            throw .notFound(digest)
        }
        do {
            return BlobReader(digest: digest, path: path, fd: fd, size: try POSIX.fileSize(fd: fd, path: path))
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// A reader of a committed blob for serving hits: kept open between calls while the file at
    /// the blob's path stays the same (see `OpenBlobCache`). Shared: never closed by the caller.
    public func openKept(_ digest: Digest) throws(BlobStoreError) -> BlobReader {
        try requireBlobName(digest)
        return try openBlobs.reader(for: digest) { path(for: digest) }
    }

    /// Reads `range` of a blob into memory; for small reads (the server streams large ones).
    public func read(_ digest: Digest, range: Range<UInt64>) throws(BlobStoreError) -> [UInt8] {
        try open(digest).read(range)
    }

    /// Every committed blob's digest, in no particular order. Stray files are skipped.
    public func allDigests() throws(BlobStoreError) -> [Digest] {
        var out: [Digest] = []
        try Self.walkBlobs(blobsRoot) { digest, _ in
            if let digest { out.append(digest) }
        }
        return out
    }

    /// Starts a new blob; bytes go to a temporary file until `commit`.
    ///
    /// - Parameters:
    ///   - expecting: digests and size the caller already knows; a mismatch fails the commit.
    ///   - alsoCompute: digests to compute in the same pass besides SHA-256.
    public func makeWriter(expecting: BlobExpectation = .init(), alsoCompute: Set<DigestAlgorithm> = []) throws(BlobStoreError) -> BlobWriter {
        try BlobWriter(store: self, expectation: expecting, extraAlgorithms: alsoCompute)
    }

    // MARK: Removal

    /// Removes a committed blob (eviction, or an operator's delete). Readers that already
    /// opened it keep reading it until they close; new opens get `.notFound`.
    public func remove(_ digest: Digest) throws(BlobStoreError) {
        try requireBlobName(digest)
        let path = path(for: digest)
        openBlobs.remove(digest)
        guard try POSIX.fileSize(path) != nil else { throw .notFound(digest) }
        try POSIX.unlink(path)
        // Again after the unlink: a hit that opened the blob between the first drop and the
        // unlink would otherwise keep the deleted file's blocks allocated in the cache.
        openBlobs.remove(digest)
        try POSIX.fsyncDirectory(shardDirectories(for: digest).1)
    }

    // MARK: Verification

    /// Re-hashes one blob; moves it to `quarantine/` when its bytes do not match its name.
    ///
    /// - Returns: nil when the blob is intact, else where it was moved.
    @discardableResult
    public func verify(_ digest: Digest) throws(BlobStoreError) -> CorruptBlob? {
        let reader = try open(digest)
        let actual = try reader.computeDigest(.sha256)
        guard actual != digest else { return nil }
        let target = try quarantine(digest)
        let corrupt = CorruptBlob(digest: digest, actual: actual, size: reader.size, quarantinedAt: target)
        logger.error("blob content does not match its name; quarantined", metadata: ["blob": "\(digest.hex)", "actual": "\(actual.hex)", "moved_to": "\(target)"])
        return corrupt
    }

    /// Moves a blob whose bytes no longer match what was recorded of it to `quarantine/`,
    /// where an operator can look at it; it is no longer served. Readers that opened it keep
    /// their descriptor.
    ///
    /// - Returns: where the file went.
    /// - Throws: `.notFound` when it is already gone.
    @discardableResult
    public func quarantine(_ digest: Digest) throws(BlobStoreError) -> String {
        try requireBlobName(digest)
        let source = path(for: digest)
        openBlobs.remove(digest)
        let target = "\(quarantineRoot)/\(digest.hex).\(time(nil))"
        do {
            try POSIX.rename(source, target)
        } catch .io(_, _, ENOENT) {
            throw .notFound(digest)
        }
        openBlobs.remove(digest)  // again: a hit may have opened it just before the rename
        try POSIX.fsyncDirectory(quarantineRoot)
        try POSIX.fsyncDirectory(shardDirectories(for: digest).1)
        return target
    }

    /// Re-hashes every blob, quarantining the corrupt ones.
    ///
    /// - Parameter progress: called after each blob with (blobs done, total blobs, bytes done).
    public func verifyAll(progress: (Int, Int, UInt64) -> Void = { _, _, _ in }) throws(BlobStoreError) -> VerifyReport {
        let digests = try allDigests()
        var report = VerifyReport()
        for (i, digest) in digests.enumerated() {
            do {
                if let corrupt = try verify(digest) {
                    report.corrupt.append(corrupt)
                }
                report.bytesChecked += (try? size(of: digest)) ?? 0
            } catch .notFound {
                // Removed by eviction while we walked: not corruption.
            }
            report.checked += 1
            progress(i + 1, digests.count, report.bytesChecked)
        }
        return report
    }

    /// Checks that the store can write a file in `tmp/` and publish it under `blobs/` with a
    /// hard link, as a commit does (so `blobs/` on another filesystem fails here, not at the
    /// first upload); for start-up and readiness probes.
    public func checkWritable() throws(BlobStoreError) {
        let name = ".write-check-\(UInt64.random(in: .min ... .max))"
        let probe = "\(tmpRoot)/\(name)"
        let fd = try POSIX.open(probe, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        defer {
            Glibc.close(fd)
            Glibc.unlink(probe)
        }
        let written = [UInt8]("ok".utf8).withUnsafeBytes { bytes in
            Result { () throws(BlobStoreError) in try POSIX.writeAll(fd, bytes, path: probe) }
        }
        try written.get()
        let published = "\(blobsRoot)/\(name)"
        guard Glibc.link(probe, published) == 0 else { throw .io(operation: "link", path: published, errno: errno) }
        Glibc.unlink(published)
    }

    /// Removes temporary files no live writer holds (what a crash left), as at start-up.
    public func cleanTemporaryFiles() throws(BlobStoreError) -> RecoveryReport {
        try Self.recover(tmpRoot: tmpRoot, blobsRoot: blobsRoot)
    }

    func requireBlobName(_ digest: Digest) throws(BlobStoreError) {
        guard digest.algorithm == .sha256 else { throw .notABlobName(digest) }
    }

    // MARK: Recovery

    static func recover(tmpRoot: String, blobsRoot: String) throws(BlobStoreError) -> RecoveryReport {
        var report = RecoveryReport()
        for name in try POSIX.listDirectory(tmpRoot) {
            let path = "\(tmpRoot)/\(name)"
            // A writer in another process holds an exclusive lock on its file; the kernel
            // drops it when that process dies, so a locked file is live work, not debris.
            guard let fd = try? POSIX.open(path, O_RDONLY) else { continue }
            defer { Glibc.close(fd) }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 { continue }
            report.removedTemporaryBytes += (try? POSIX.fileSize(fd: fd, path: path)) ?? 0
            try POSIX.unlink(path)
            report.removedTemporaryFiles.append(name)
        }
        if !report.removedTemporaryFiles.isEmpty { try POSIX.fsyncDirectory(tmpRoot) }
        try walkBlobs(blobsRoot) { digest, path in
            if digest == nil { report.strayFiles.append(path) }
        }
        return report
    }

    /// Visits every file under `blobs/sha256/xx/yy/`, with its digest when the name is a valid
    /// digest in its right shard, else nil.
    static func walkBlobs(_ blobsRoot: String, _ visit: (Digest?, String) throws(BlobStoreError) -> Void) throws(BlobStoreError) {
        for a in try POSIX.listDirectory(blobsRoot) {
            let aPath = "\(blobsRoot)/\(a)"
            guard POSIX.isDirectory(aPath) else { try visit(nil, aPath); continue }
            for b in try POSIX.listDirectory(aPath) {
                let bPath = "\(aPath)/\(b)"
                guard POSIX.isDirectory(bPath) else { try visit(nil, bPath); continue }
                for name in try POSIX.listDirectory(bPath) {
                    let path = "\(bPath)/\(name)"
                    if let digest = try? Digest.sha256(hex: name), digest.hex == name,
                       name.hasPrefix(a + b) {
                        try visit(digest, path)
                    } else {
                        try visit(nil, path)
                    }
                }
            }
        }
    }
}

/// Digests and size a caller knows before the bytes arrive (from Glance, or a client's header).
public struct BlobExpectation: Sendable, Equatable {
    public var size: UInt64?
    public var sha256: Digest?
    public var sha512: Digest?
    public var md5: Digest?

    public init(size: UInt64? = nil, sha256: Digest? = nil, sha512: Digest? = nil, md5: Digest? = nil) {
        self.size = size
        self.sha256 = sha256
        self.sha512 = sha512
        self.md5 = md5
    }

    var digests: [Digest] { [sha256, sha512, md5].compactMap { $0 } }
}

/// A blob that `commit` made (or found already present).
public struct CommittedBlob: Sendable, Equatable {
    /// The SHA-256 digest: the blob's name.
    public let digest: Digest
    public let size: UInt64
    /// Every digest computed in the pass, SHA-256 included.
    public let digests: [DigestAlgorithm: Digest]
    /// True when the store already held these bytes and the new copy was discarded.
    public let deduplicated: Bool
    public let path: String

    public init(digest: Digest, size: UInt64, digests: [DigestAlgorithm: Digest], deduplicated: Bool, path: String) {
        self.digest = digest
        self.size = size
        self.digests = digests
        self.deduplicated = deduplicated
        self.path = path
    }
}

/// What opening the store cleaned up after a crash.
public struct RecoveryReport: Sendable, Equatable {
    public var removedTemporaryFiles: [String] = []
    public var removedTemporaryBytes: UInt64 = 0
    /// Paths under `blobs/` that are not a valid digest in their shard; reported, never served.
    public var strayFiles: [String] = []
}

/// A blob whose bytes did not hash to its name.
public struct CorruptBlob: Sendable, Equatable {
    public let digest: Digest
    public let actual: Digest
    public let size: UInt64
    public let quarantinedAt: String
}

/// The outcome of `verifyAll`.
public struct VerifyReport: Sendable, Equatable {
    public var checked = 0
    public var bytesChecked: UInt64 = 0
    public var corrupt: [CorruptBlob] = []
}
