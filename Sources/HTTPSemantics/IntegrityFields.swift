#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import RawStructuredFieldValues

/// The integrity fields of RFC 9530: `Repr-Digest` and `Content-Digest`, Dictionary
/// Structured Fields (RFC 9651) whose keys name hash algorithms and whose values are Byte
/// Sequences, e.g. `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:…:`.
public enum IntegrityFields {
    /// The SHA-256 that a request declares for its representation (`Repr-Digest`, preferred)
    /// or its content (`Content-Digest`): 32 bytes, or nil when neither field has a `sha-256`
    /// member. Members of other algorithms are ignored (section 5: a recipient uses the ones it
    /// supports), and so are members' parameters.
    ///
    /// - Parameters:
    ///   - reprDigest: the `Repr-Digest` field lines as received; several lines of one field
    ///     form one dictionary (RFC 9110 section 5.3).
    ///   - contentDigest: the `Content-Digest` field lines.
    /// - Throws: `IntegrityFieldError` when a field is not a dictionary, or its `sha-256` member
    ///   is not a Byte Sequence of 32 bytes: the client meant to declare a digest, and a check
    ///   silently skipped would defeat it.
    public static func sha256(reprDigest: [String], contentDigest: [String]) throws(IntegrityFieldError) -> [UInt8]? {
        for (name, lines) in [("Repr-Digest", reprDigest), ("Content-Digest", contentDigest)] where !lines.isEmpty {
            if let digest = try sha256(field: name, value: lines.joined(separator: ", ")) { return digest }
        }
        return nil
    }

    static func sha256(field: String, value: String) throws(IntegrityFieldError) -> [UInt8]? {
        let members: OrderedMap<String, ItemOrInnerList>
        do {
            var parser = StructuredFieldValueParser(Array(value.utf8))
            members = try parser.parseDictionaryFieldValue()
        } catch {
            throw IntegrityFieldError(
                message: "\(field) is not a structured field dictionary (RFC 9530, RFC 9651): \(error); "
                    + "send lowercase algorithm=:BASE64: members, e.g. sha-256=:\(example):")
        }
        guard let member = members["sha-256"] else { return nil }
        guard case let .item(item) = member, case let .undecodedByteSequence(base64) = item.rfc9651BareItem else {
            throw IntegrityFieldError(message: "\(field) sha-256 must be a byte sequence :BASE64: (RFC 9530), e.g. sha-256=:\(example):")
        }
        // RFC 9651 section 4.2.7: parsers should not insist on '=' padding.
        let padded = base64 + String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        guard let bytes = Data(base64Encoded: padded), bytes.count == 32 else {
            throw IntegrityFieldError(message: "\(field) sha-256 must hold the 32 bytes of a SHA-256 in base64 (RFC 9530), got :\(base64.prefix(80)):")
        }
        return Array(bytes)
    }

    /// SHA-256 of the empty representation, as an example of the form.
    static let example = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
}

/// Why a declared digest cannot be used; the message says what to send instead.
public struct IntegrityFieldError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public var description: String { message }
}
