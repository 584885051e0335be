import CFileIO
import Glibc

/// An open, committed blob: its size, byte-range reads, and the descriptor for zero-copy sends.
///
/// Holding a reader keeps the bytes readable even if the blob is evicted meanwhile (the file
/// stays alive until the descriptor closes). Reads use `pread`, so one reader may serve many
/// threads at once.
public final class BlobReader: Sendable {
    public let digest: Digest
    public let path: String
    public let size: UInt64
    /// The open descriptor; owned by the reader and closed when it is released.
    public let fileDescriptor: Int32

    /// A reader over an already open descriptor of the blob's bytes (a fill's file, which is
    /// the committed blob's inode); it takes ownership of `fd`.
    package init(digest: Digest, path: String, fd: Int32, size: UInt64) {
        self.digest = digest
        self.path = path
        self.fileDescriptor = fd
        self.size = size
    }

    deinit { Glibc.close(fileDescriptor) }

    /// Checks that a range is non-empty and inside the blob.
    public func validate(_ range: Range<UInt64>) throws(BlobStoreError) {
        guard !range.isEmpty, range.upperBound <= size else {
            throw .invalidRange(lowerBound: range.lowerBound, upperBound: range.upperBound, size: size)
        }
    }

    /// Reads a non-empty range that lies inside the blob.
    public func read(_ range: Range<UInt64>) throws(BlobStoreError) -> [UInt8] {
        try validate(range)
        let count = Int(range.upperBound - range.lowerBound)
        var out = [UInt8](repeating: 0, count: count)
        var failure: BlobStoreError?
        out.withUnsafeMutableBytes { buffer in
            var filled = 0
            while filled < count {
                let n: Int
                do throws(BlobStoreError) {
                    n = try POSIX.pread(fileDescriptor, UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), offset: range.lowerBound + UInt64(filled), path: path)
                } catch {
                    failure = error
                    return
                }
                guard n > 0 else {
                    failure = .sizeMismatch(expected: size, actual: range.lowerBound + UInt64(filled))
                    return
                }
                filled += n
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Calls `body` with consecutive chunks of `range` (at most `chunkSize` bytes each).
    public func forEachChunk(
        of range: Range<UInt64>? = nil, chunkSize: Int = 1 << 20,
        _ body: (UnsafeRawBufferPointer) throws(BlobStoreError) -> Void
    ) throws(BlobStoreError) {
        let range = range ?? 0..<size
        if range.isEmpty { return }
        try validate(range)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var offset = range.lowerBound
        while offset < range.upperBound {
            let want = Int(min(UInt64(chunkSize), range.upperBound - offset))
            let n = try POSIX.pread(fileDescriptor, UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]), offset: offset, path: path)
            guard n > 0 else { throw .sizeMismatch(expected: size, actual: offset) }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            offset += UInt64(n)
        }
    }

    /// Hashes the whole blob with one algorithm on a thread that yields to all other work
    /// (nice 10), for digests that nobody waits on.
    public func computeDigestInBackground(_ algorithm: DigestAlgorithm) throws(BlobStoreError) -> Digest {
        _ = depot_set_thread_nice(10)
        defer { _ = depot_set_thread_nice(0) }
        return try computeDigest(algorithm)
    }

    /// Hashes the whole blob at no more than `bytesPerSecond`, sleeping between chunks, on a
    /// thread that yields to all other work (nice 10): the scrub's pass, which must not take
    /// the disk or the CPU from requests.
    ///
    /// - Throws: `.aborted` as soon as `isCancelled` returns true.
    public func computeDigestInBackground(
        _ algorithm: DigestAlgorithm, bytesPerSecond: UInt64, isCancelled: () -> Bool
    ) throws(BlobStoreError) -> Digest {
        _ = depot_set_thread_nice(10)
        defer { _ = depot_set_thread_nice(0) }
        func seconds() -> Double {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        }
        let hasher = DigestHasher(algorithm)
        let started = seconds()
        var done: UInt64 = 0
        try forEachChunk { chunk throws(BlobStoreError) in
            if isCancelled() { throw .aborted(reason: "the scrub was stopped") }
            hasher.update(chunk)
            done += UInt64(chunk.count)
            // Sleep until the pass is back on its rate; in slices, so a stop is seen quickly.
            var ahead = Double(done) / Double(max(1, bytesPerSecond)) - (seconds() - started)
            while ahead > 0 {
                if isCancelled() { throw .aborted(reason: "the scrub was stopped") }
                usleep(UInt32(min(ahead, 0.2) * 1_000_000))
                ahead = Double(done) / Double(max(1, bytesPerSecond)) - (seconds() - started)
            }
        }
        return hasher.finish()
    }

    /// Hashes the whole blob with one algorithm.
    public func computeDigest(_ algorithm: DigestAlgorithm) throws(BlobStoreError) -> Digest {
        let hasher = DigestHasher(algorithm)
        try forEachChunk { hasher.update($0) }
        return hasher.finish()
    }
}
