import Glibc

/// What went wrong in the blob store, with the path, digest and errno text that explain it.
public enum BlobStoreError: Error, CustomStringConvertible, Equatable {
    /// A system call failed; `errno` is kept so callers can tell causes apart.
    case io(operation: String, path: String, errno: Int32)
    /// The filesystem ran out of space (ENOSPC or EDQUOT) while writing; nothing was kept.
    case diskFull(path: String)
    /// No committed blob has this digest.
    case notFound(Digest)
    /// The bytes hashed to something other than what the caller said they would.
    case digestMismatch(expected: Digest, actual: Digest)
    /// The caller stated a size and the bytes were longer or shorter.
    case sizeMismatch(expected: UInt64, actual: UInt64)
    /// A blob is named by SHA-256; another algorithm was given.
    case notABlobName(Digest)
    /// A byte range that is empty or lies outside the blob.
    case invalidRange(lowerBound: UInt64, upperBound: UInt64, size: UInt64)
    /// `write` or `commit` after the writer was committed or aborted.
    case writerClosed(path: String)
    /// The bytes stopped coming (the sender went away); nothing was kept.
    case aborted(reason: String)

    public var description: String {
        switch self {
        case let .io(operation, path, code):
            "\(operation) \(path): \(Self.errnoText(code)) (errno \(code))"
        case let .diskFull(path):
            "disk full while writing \(path); free space in the data directory and retry"
        case let .notFound(digest):
            "no blob \(digest.hex) in the store"
        case let .digestMismatch(expected, actual):
            "content mismatch: expected \(expected.algorithm.rawValue) \(expected.hex), the bytes hash to \(actual.hex)"
        case let .sizeMismatch(expected, actual):
            "size mismatch: expected \(expected) bytes, got \(actual)"
        case let .notABlobName(digest):
            "blobs are named by sha256, not \(digest.algorithm.rawValue)"
        case let .invalidRange(lower, upper, size):
            "byte range \(lower)..<\(upper) is empty or outside a blob of \(size) bytes"
        case let .writerClosed(path):
            "blob writer for \(path) was already committed or aborted"
        case let .aborted(reason):
            "the write was abandoned: \(reason)"
        }
    }

    /// The C library's text for an errno value.
    static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// An `.io` error from the current `errno`, or `.diskFull` when the disk is out of space.
    static func fromErrno(_ operation: String, path: String, code: Int32 = errno) -> BlobStoreError {
        if code == ENOSPC || code == EDQUOT { return .diskFull(path: path) }
        return .io(operation: operation, path: path, errno: code)
    }
}
