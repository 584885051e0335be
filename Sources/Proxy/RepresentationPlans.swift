import Glance
import HTTPCore
import HTTPSemantics
import NIOHTTP1

extension Representation {
    /// An image's data as every serving path describes it, from Glance's record alone (so a
    /// miss knows it before the first byte): the size, Glance's `os_hash_value` (else its MD5
    /// `checksum`) as the strong entity tag, and the `checksum` as `Content-MD5`.
    ///
    /// The tag is Glance's hash of the bytes, which an image keeps for life (images are
    /// immutable once active), so a validator a client holds stays true on every path.
    ///
    /// Only hex goes into either field: a record is the backend's to write, and a value with a
    /// line break would add fields of its own to the head (the fast path writes heads as bytes).
    init(image: GlanceImage) {
        let checksum = image.checksum
        let checksumTag = Self.entityTag(hex: checksum)
        self.init(
            size: image.size ?? 0, entityTag: Self.entityTag(hex: image.osHashValue) ?? checksumTag,
            contentMD5: checksumTag == nil ? nil : checksum)
    }

    /// `hex` lowercased and quoted; nil unless it is non-empty hex. Built in one pass: every
    /// hit on the event loop plans with it.
    static func entityTag(hex: String?) -> String? {
        guard var hex, !hex.isEmpty else { return nil }
        let tag = hex.withUTF8 { bytes in
            String(unsafeUninitializedCapacity: bytes.count + 2) { out in
                // One table load per byte (an os_hash_value has 128): a range switch per byte
                // cost 15 instructions a byte.
                lowercaseHex.withUnsafeBufferPointer { table in
                    guard let base = out.baseAddress, let from = bytes.baseAddress else { return 0 }
                    base[0] = UInt8(ascii: "\"")
                    for i in 0..<bytes.count {
                        let c = table[Int(from[i])]
                        guard c != 0 else { return 0 }
                        base[i + 1] = c
                    }
                    base[bytes.count + 1] = UInt8(ascii: "\"")
                    return bytes.count + 2
                }
            }
        }
        return tag.isEmpty ? nil : tag
    }

    /// Per byte: its lowercase hex digit, or 0 for a byte that is not a hex digit.
    private static let lowercaseHex: [UInt8] = (0...255).map { (byte: Int) -> UInt8 in
        switch UInt8(byte) {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"): UInt8(byte)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt8(byte) + 32
        default: 0
        }
    }
}

extension RepresentationRequest {
    /// The request's method and its range and conditional fields; nil for methods other than
    /// GET and HEAD.
    init?(_ head: HTTPRequestHead) {
        guard let (request, _) = Self.read(head) else { return nil }
        self = request
    }

    /// The request (as `init?(_:)` reads it) and its `X-Auth-Token`, from one pass over the
    /// head's fields: a lookup by name per field was a pass each, four on every hit. As those
    /// lookups: the first `Range` and `If-Range`, every `If-None-Match` and `If-Match` joined with ", " (RFC
    /// 9110 section 5.3), and the token when there is one only (`Request.authToken` makes two
    /// one invalid token); names compared without regard to ASCII case.
    static func read(_ head: HTTPRequestHead) -> (request: RepresentationRequest, token: String?)? {
        let method: Method
        switch head.method {
        case .GET: method = .get
        case .HEAD: method = .head
        default: return nil
        }
        var range: String?, ifRange: String?, ifNoneMatch: String?, ifMatch: String?, token: String?, tokens = 0
        for (name, value) in head.headers {
            switch name.utf8.count {
            case 5 where range == nil && name.isASCIICaseInsensitive("range"): range = value
            case 8 where ifRange == nil && name.isASCIICaseInsensitive("if-range"): ifRange = value
            case 8 where name.isASCIICaseInsensitive("if-match"): ifMatch = ifMatch.map { $0 + ", " + value } ?? value
            case 12 where name.isASCIICaseInsensitive("x-auth-token"):
                token = value
                tokens += 1
            case 13 where name.isASCIICaseInsensitive("if-none-match"): ifNoneMatch = ifNoneMatch.map { $0 + ", " + value } ?? value
            default: break
            }
        }
        return (RepresentationRequest(method: method, range: range, ifRange: ifRange, ifNoneMatch: ifNoneMatch, ifMatch: ifMatch), tokens == 1 ? token : nil)
    }
}

extension String {
    /// Whether this is `lowercase` (lowercase ASCII) but for the case of its letters A to Z,
    /// as field names compare (RFC 9110 section 5.1).
    func isASCIICaseInsensitive(_ lowercase: StaticString) -> Bool {
        var text = self
        return text.withUTF8 { bytes in
            lowercase.withUTF8Buffer { expected in
                guard bytes.count == expected.count else { return false }
                for i in 0..<bytes.count {
                    let byte = bytes[i]
                    if (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) != expected[i] { return false }
                }
                return true
            }
        }
    }
}

extension ResponsePlan {
    /// The plan's header fields, then where the bytes come from (`x-depot-cache`).
    func httpHeaders(cacheResult: String, date: [UInt8] = HTTPDate.now()) -> HTTPHeaders {
        let headers = headers
        var fields: [(String, String)] = []
        fields.reserveCapacity(headers.count + 2)
        for field in headers { fields.append((field.name, field.value)) }
        fields.append(("date", String(decoding: date, as: UTF8.self)))
        fields.append(("x-depot-cache", cacheResult))
        return HTTPHeaders(fields)
    }
}
