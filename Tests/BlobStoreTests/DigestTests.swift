import Foundation
import BlobStore
import Testing

@Suite struct DigestTests {
    @Test func knownVectorsOfEmptyInput() {
        #expect(Digest.of([], algorithm: .sha256).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Digest.of([], algorithm: .md5).hex == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(Digest.of([], algorithm: .sha512).hex
            == "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")
    }

    @Test func knownVectorsOfABC() {
        let abc = Array("abc".utf8)
        #expect(Digest.of(abc, algorithm: .sha256).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Digest.of(abc, algorithm: .md5).hex == "900150983cd24fb0d6963f7d28e17f72")
        #expect(Digest.of(abc, algorithm: .sha512).hex
            == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    }

    @Test func streamingEqualsOneShot() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let hasher = DigestHasher(.sha256)
        for chunk in stride(from: 0, to: bytes.count, by: 777) {
            bytes[chunk..<min(chunk + 777, bytes.count)].withUnsafeBytes { hasher.update($0) }
        }
        #expect(hasher.finish() == Digest.of(bytes, algorithm: .sha256))
    }

    /// `==` is equal algorithms and equal bytes, whichever byte differs, and `hash(into:)`
    /// agrees with it.
    @Test func equalityIsByteForByte() throws {
        let base = Digest.of(Array("depot".utf8), algorithm: .sha256)
        #expect(base == Digest(algorithm: .sha256, bytes: Array(base.bytes)))
        #expect(base.hashValue == Digest(algorithm: .sha256, bytes: Array(base.bytes)).hashValue)
        for index in base.bytes.indices {
            var bytes = base.bytes
            bytes[index] ^= 0x01
            #expect(base != Digest(algorithm: .sha256, bytes: bytes), "byte \(index)")
        }
        let md5 = Digest.of(Array("depot".utf8), algorithm: .md5)
        #expect(md5 != Digest.of(Array("depot".utf8), algorithm: .sha512) && md5 == Digest.of(Array("depot".utf8), algorithm: .md5))
        // A decoded value's bytes are not checked, so they may be empty.
        let empty = try JSONDecoder().decode(Digest.self, from: Data(#"{"algorithm":"sha256","bytes":[]}"#.utf8))
        #expect(empty == empty && empty != base)
    }

    @Test func hexRoundTrips() throws {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        let digest = try Digest.sha256(hex: hex)
        #expect(digest.hex == hex)
        #expect(digest.description == "sha256:" + hex)
        #expect(digest.bytes.count == 32)
    }

    @Test func uppercaseIsAcceptedAndCanonicalizedToLowercase() throws {
        let lower = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        let upper = try Digest.sha256(hex: lower.uppercased())
        #expect(upper == (try Digest.sha256(hex: lower)))
        #expect(upper.hex == lower)
        let mixed = try Digest(algorithm: .md5, hex: "900150983CD24fb0d6963F7D28E17F72")
        #expect(mixed.hex == "900150983cd24fb0d6963f7d28e17f72")
    }

    @Test(arguments: [
        ("", 0),
        ("abc", 3),
        (String(repeating: "a", count: 63), 63),
        (String(repeating: "a", count: 65), 65),
        (String(repeating: "a", count: 128), 128),
    ])
    func wrongLengthIsRejected(hex: String, length: Int) {
        #expect(throws: DigestParseError.wrongLength(algorithm: .sha256, expected: 64, actual: length)) {
            try Digest.sha256(hex: hex)
        }
    }

    @Test(arguments: [
        ("g" + String(repeating: "0", count: 63), 0),
        (String(repeating: "0", count: 63) + "z", 63),
        (String(repeating: "0", count: 31) + " " + String(repeating: "0", count: 32), 31),
        (String(repeating: "0", count: 10) + "/" + String(repeating: "0", count: 53), 10),
        (String(repeating: "0", count: 10) + "." + String(repeating: "0", count: 53), 10),
    ])
    func nonHexIsRejected(hex: String, offset: Int) {
        #expect(throws: DigestParseError.notHex(algorithm: .sha256, offset: offset)) {
            try Digest.sha256(hex: hex)
        }
    }

    @Test func multibyteCharactersAreRejectedNotMisparsed() {
        // 32 two-byte characters: 64 UTF-8 bytes but not 64 hex digits.
        #expect(throws: DigestParseError.self) { try Digest.sha256(hex: String(repeating: "é", count: 32)) }
    }

    @Test func lengthsFollowTheAlgorithm() {
        #expect(DigestAlgorithm.sha256.byteCount == 32)
        #expect(DigestAlgorithm.sha512.byteCount == 64)
        #expect(DigestAlgorithm.md5.byteCount == 16)
        #expect(throws: DigestParseError.wrongLength(algorithm: .md5, expected: 32, actual: 64)) {
            try Digest(algorithm: .md5, hex: String(repeating: "0", count: 64))
        }
    }
}
