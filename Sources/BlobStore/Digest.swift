import COpenSSL
import Glibc

/// A hash function Depot computes over image bytes.
public enum DigestAlgorithm: String, Sendable, CaseIterable, Codable, Comparable {
    case sha256
    case sha512
    case md5

    /// Length of a digest of this algorithm in bytes.
    public var byteCount: Int {
        switch self {
        case .sha256: 32
        case .sha512: 64
        case .md5: 16
        }
    }

    public static func < (lhs: DigestAlgorithm, rhs: DigestAlgorithm) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    /// The algorithm's EVP_MD, fetched once: OpenSSL 3 looks up the provider on every init
    /// given a legacy `EVP_sha256()`, which costs more than hashing a short string.
    fileprivate var evp: OpaquePointer? {
        switch self {
        case .sha256: FetchedAlgorithms.sha256
        case .sha512: FetchedAlgorithms.sha512
        case .md5: FetchedAlgorithms.md5
        }
    }
}

/// The SHA-256 of a secret, kept instead of the secret where a table must recognise it again
/// (a token's cached decisions) without holding it: 32 bytes as 4 words, hashed and compared
/// without a hex string.
public struct SecretFingerprint: Hashable, Sendable {
    private let words: (UInt64, UInt64, UInt64, UInt64)

    /// Hashes `secret`'s UTF-8 in one call (`EVP_Digest`).
    public init(_ secret: String) {
        var secret = secret
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        secret.withUTF8 { bytes in
            withUnsafeMutableBytes(of: &words) { out in
                var length: UInt32 = 0
                let ok = EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length, DigestAlgorithm.sha256.evp, nil)
                precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed; is libcrypto's default provider available?")
            }
        }
        self.words = words
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2 && lhs.words.3 == rhs.words.3
    }

    public func hash(into hasher: inout Hasher) {
        // A cryptographic hash's bits are uniform already: one word is enough for a table.
        hasher.combine(words.0)
    }
}

/// EVP_MD objects fetched from the default provider at first use and kept for the process.
private enum FetchedAlgorithms {
    nonisolated(unsafe) static let sha256 = EVP_MD_fetch(nil, "SHA256", nil) ?? EVP_sha256()
    nonisolated(unsafe) static let sha512 = EVP_MD_fetch(nil, "SHA512", nil) ?? EVP_sha512()
    nonisolated(unsafe) static let md5 = EVP_MD_fetch(nil, "MD5", nil) ?? EVP_md5()
}

/// Why a hex string is not a digest.
public enum DigestParseError: Error, Equatable, CustomStringConvertible {
    case wrongLength(algorithm: DigestAlgorithm, expected: Int, actual: Int)
    case notHex(algorithm: DigestAlgorithm, offset: Int)

    public var description: String {
        switch self {
        case let .wrongLength(algorithm, expected, actual):
            "a \(algorithm.rawValue) digest is \(expected) hex characters, got \(actual)"
        case let .notHex(algorithm, offset):
            "a \(algorithm.rawValue) digest must be hex (0-9, a-f); character \(offset + 1) is not"
        }
    }
}

/// The value of a digest: an algorithm and its bytes.
///
/// Prints as lowercase hex. Parsing accepts upper- or lowercase hex and always yields the
/// canonical lowercase form, so two spellings of one digest compare equal.
public struct Digest: Hashable, Sendable, CustomStringConvertible, Codable {
    public let algorithm: DigestAlgorithm
    public let bytes: [UInt8]

    /// Wraps raw digest bytes; the count must match the algorithm.
    public init(algorithm: DigestAlgorithm, bytes: [UInt8]) {
        precondition(bytes.count == algorithm.byteCount, "\(algorithm) digest needs \(algorithm.byteCount) bytes")
        self.algorithm = algorithm
        self.bytes = bytes
    }

    /// Parses a hex digest, validating its length and alphabet.
    public init(algorithm: DigestAlgorithm, hex: some StringProtocol) throws(DigestParseError) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == algorithm.byteCount * 2 else {
            throw .wrongLength(algorithm: algorithm, expected: algorithm.byteCount * 2, actual: utf8.count)
        }
        var out = [UInt8](repeating: 0, count: algorithm.byteCount)
        for i in 0..<algorithm.byteCount {
            guard let hi = Self.nibble(utf8[2 * i]) else { throw .notHex(algorithm: algorithm, offset: 2 * i) }
            guard let lo = Self.nibble(utf8[2 * i + 1]) else { throw .notHex(algorithm: algorithm, offset: 2 * i + 1) }
            out[i] = hi << 4 | lo
        }
        self.algorithm = algorithm
        self.bytes = out
    }

    /// Parses a SHA-256 hex digest, the name of a blob.
    public static func sha256(hex: some StringProtocol) throws(DigestParseError) -> Digest {
        try Digest(algorithm: .sha256, hex: hex)
    }

    /// Lowercase hex.
    public var hex: String {
        let table: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: bytes.count * 2) { buffer in
            for (i, byte) in bytes.enumerated() {
                buffer[2 * i] = table[Int(byte >> 4)]
                buffer[2 * i + 1] = table[Int(byte & 0x0f)]
            }
            return bytes.count * 2
        }
    }

    public var description: String { "\(algorithm.rawValue):\(hex)" }

    /// The first 8 bytes as one word: a cryptographic digest's bits are uniform already, and
    /// every cache hit looks a digest up in several tables (the synthesized hash fed the array
    /// to the hasher a byte at a time). Equal digests have equal first words, as `==` needs.
    /// The algorithm goes in as its length, which differs for each: hashing the enum hashes
    /// its raw value, a string (about 1,800 instructions per hit over its lookups). The length
    /// is folded into the word, one `combine` instead of two (about 300 instructions per hit):
    /// digests of two algorithms that then hash alike still differ by `==`.
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { raw in
            // Every algorithm's digest has at least 16 bytes; a decoded value is not checked.
            if raw.count >= 8 {
                hasher.combine(raw.loadUnaligned(as: UInt64.self) ^ UInt64(algorithm.byteCount))
            } else {
                hasher.combine(algorithm.byteCount)
                hasher.combine(bytes: raw)
            }
        }
    }

    /// Equal algorithm and bytes, the bytes compared in one `memcmp`: every hit looks a digest
    /// up in several tables, and the synthesized `==` compared the arrays a byte at a time.
    public static func == (a: Digest, b: Digest) -> Bool {
        guard a.algorithm == b.algorithm, a.bytes.count == b.bytes.count else { return false }
        // A decoded value is not checked: its bytes may be empty (and have no address).
        guard !a.bytes.isEmpty else { return true }
        return a.bytes.withUnsafeBytes { x in b.bytes.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }

    /// Digest of a whole buffer in one call.
    public static func of(_ bytes: some Sequence<UInt8>, algorithm: DigestAlgorithm) -> Digest {
        let hasher = DigestHasher(algorithm)
        let array = Array(bytes)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finish()
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A streaming hash over libcrypto's EVP interface: `update` with buffers, then `finish` once.
///
/// One hasher is used by one thread at a time; the writer hands each to a single lane.
public final class DigestHasher {
    public let algorithm: DigestAlgorithm
    private let context: OpaquePointer
    private var finished = false

    public init(_ algorithm: DigestAlgorithm) {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        guard EVP_DigestInit_ex(ctx, algorithm.evp, nil) == 1 else {
            fatalError("EVP_DigestInit_ex(\(algorithm)) failed; is libcrypto's default provider available?")
        }
        self.algorithm = algorithm
        self.context = ctx
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Feeds bytes into the hash.
    public func update(_ buffer: UnsafeRawBufferPointer) {
        precondition(!finished, "DigestHasher.update after finish")
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        EVP_DigestUpdate(context, base, buffer.count)
    }

    /// Ends the hash and returns its value; the hasher cannot be updated afterwards.
    public func finish() -> Digest {
        precondition(!finished, "DigestHasher.finish called twice")
        finished = true
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
        return Digest(algorithm: algorithm, bytes: Array(out.prefix(Int(length))))
    }
}
