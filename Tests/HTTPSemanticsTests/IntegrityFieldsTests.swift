import HTTPSemantics
import Testing

/// `Repr-Digest` / `Content-Digest` (RFC 9530) as Dictionary Structured Fields (RFC 9651).
/// Expected digests are RFC 9530's own examples (section 3: `{"hello": "world"}`), checked
/// with Python's hashlib.
@Suite struct IntegrityFieldsTests {
    static let helloSHA256 = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    static let helloSHA256Hex = "5f8f04f6a3a892aaabbddb6cf273894493773960d4a325b105fee46eef4304f1"
    static let helloSHA512 = "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=="

    static func hex(_ bytes: [UInt8]?) -> String? {
        bytes.map { $0.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
    }

    static func repr(_ lines: String...) throws -> String? {
        hex(try IntegrityFields.sha256(reprDigest: lines, contentDigest: []))
    }

    @Test func theRFCsExamples() throws {
        #expect(try Self.repr("sha-256=:\(Self.helloSHA256):") == Self.helloSHA256Hex)
        #expect(try Self.hex(IntegrityFields.sha256(reprDigest: [], contentDigest: ["sha-256=:\(Self.helloSHA256):"])) == Self.helloSHA256Hex)
        #expect(try IntegrityFields.sha256(reprDigest: [], contentDigest: []) == nil)
    }

    /// Members may carry parameters (RFC 9651 section 3.2): the hand split on `,` and `=`
    /// refused these.
    @Test func membersWithParameters() throws {
        #expect(try Self.repr("sha-256=:\(Self.helloSHA256):;source=client") == Self.helloSHA256Hex)
        #expect(try Self.repr("sha-256=:\(Self.helloSHA256):;a=1;b=\"x, y=z\", sha-512=:\(Self.helloSHA512):;q") == Self.helloSHA256Hex)
        #expect(try Self.repr("sha-512=:\(Self.helloSHA512):;note=\"sha-256=:AAAA:\"") == nil)
    }

    /// Several algorithms, in any order and over several field lines; others are ignored.
    @Test func severalAlgorithms() throws {
        #expect(try Self.repr("sha-512=:\(Self.helloSHA512):, sha-256=:\(Self.helloSHA256):") == Self.helloSHA256Hex)
        #expect(try Self.repr("sha-512=:\(Self.helloSHA512):", "sha-256=:\(Self.helloSHA256):") == Self.helloSHA256Hex)
        #expect(try Self.repr("sha-512=:\(Self.helloSHA512):") == nil)
        #expect(try Self.repr("md5=:XrY7u+Ae7tCTyyK7j1rNww==:, unixsum=2") == nil)
        // Repr-Digest is preferred; Content-Digest is read when it has no sha-256.
        let both = try IntegrityFields.sha256(reprDigest: ["sha-512=:\(Self.helloSHA512):"], contentDigest: ["sha-256=:\(Self.helloSHA256):"])
        #expect(Self.hex(both) == Self.helloSHA256Hex)
        // '=' padding is optional for a parser (RFC 9651 section 4.2.7).
        #expect(try Self.repr("sha-256=:\(Self.helloSHA256.dropLast()):") == Self.helloSHA256Hex)
    }

    @Test func badBase64IsRefused() {
        for value in ["sha-256=:not base64:", "sha-256=:X48E9qOo$kqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=", "sha-256=:a===:"] {
            let error = #expect(throws: IntegrityFieldError.self, "\(value)") { try Self.repr(value) }
            #expect(error?.message.contains("Repr-Digest") == true)
        }
    }

    @Test func wrongLengthsAndTypesAreRefused() {
        let sha1 = "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
        for value in ["sha-256=:\(sha1):", "sha-256=:\(Self.helloSHA512):", "sha-256=::", "sha-256=abc", "sha-256=\"\(Self.helloSHA256)\"", "sha-256", "sha-256=(:\(Self.helloSHA256):)"] {
            let error = #expect(throws: IntegrityFieldError.self, "\(value)") { try Self.repr(value) }
            #expect(error?.message.contains("sha-256") == true)
        }
        // Not a dictionary at all: the client meant a digest, so it hears why it was not used.
        #expect(throws: IntegrityFieldError.self) { try Self.repr("SHA-256=:\(Self.helloSHA256):") }
        #expect(throws: IntegrityFieldError.self) { try Self.repr("sha-256=:\(Self.helloSHA256):,") }
    }
}
