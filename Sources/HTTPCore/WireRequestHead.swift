import Glibc
import NIOCore
import NIOHTTP1

/// A request head read straight from a connection's bytes, for `WireFastPath`: only the plain
/// form a cache hit comes in, so that every head it accepts is one NIO's `HTTPRequestDecoder`
/// reads the same way (`WireRequestHeadTests` checks that against the decoder).
///
/// Accepted: `GET` or `HEAD`, an origin-form target of visible ASCII (RFC 9112 section 3.2.1,
/// without a fragment), `HTTP/1.1`, CRLF line ends, header fields `token ":" OWS value` with a
/// value of visible ASCII, spaces and tabs that does not end in whitespace (RFC 9110 section
/// 5.5), the whole head within `maximumLength` bytes and `maximumFields` fields. A head with a
/// message body or anything that
/// changes the connection (`Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`, a
/// `Connection` other than one `keep-alive`) is not accepted. Anything not accepted, an incomplete
/// head included, is left to the decoder, which answers it as before (400, 414, 431, ...).
struct WireRequestHead {
    let method: HTTPMethod
    let target: String
    /// Header fields in their order, names as sent, values without their leading whitespace:
    /// (name, value), the element type `HTTPHeaders` keeps, so `head` takes the array as it is.
    let fields: [(String, String)]
    /// Bytes of the head, its final empty line included.
    let length: Int
    /// Where the value of the first `Range` field is among those bytes (nil: no such field).
    let firstRange: Range<Int>?

    /// The head as NIO's decoder delivers it.
    var head: HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: HTTPHeaders(fields))
    }

    /// Longest head accepted, in bytes; longer ones go to the decoder (whose limits answer 414 and 431).
    static let maximumLength = 8 * 1024
    /// Most header fields accepted.
    static let maximumFields = 64

    /// The head at the start of `bytes`, or nil when it is not one this reader accepts (or not
    /// complete yet).
    static func read(_ bytes: UnsafeRawBufferPointer) -> WireRequestHead? {
        var fields: [(String, String)] = []
        fields.reserveCapacity(8)
        var firstRange: Range<Int>?
        guard let (method, target, length) = scan(bytes, field: { bytes, name, value in
            let nameBytes = UnsafeRawBufferPointer(rebasing: bytes[name])
            if firstRange == nil, name.count == 5, equalsLowercased(bytes, name, "range") { firstRange = value }
            fields.append((commonName(nameBytes) ?? String(decoding: nameBytes, as: UTF8.self),
                           String(decoding: UnsafeRawBufferPointer(rebasing: bytes[value]), as: UTF8.self)))
        }) else { return nil }
        return WireRequestHead(
            method: method, target: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[target]), as: UTF8.self), fields: fields, length: length,
            firstRange: firstRange)
    }

    /// The number of bytes of the head at the start of `bytes` when it is one `read` accepts,
    /// without building its strings; nil otherwise.
    static func length(_ bytes: UnsafeRawBufferPointer) -> Int? {
        scan(bytes, field: { _, _, _ in })?.2
    }

    /// How many heads `read` accepts follow each other in `bytes` and fill it exactly; nil
    /// when anything else is among them (or after them).
    static func count(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var start = 0
        var heads = 0
        while start < bytes.count {
            guard let length = length(UnsafeRawBufferPointer(rebasing: bytes[start...])) else { return nil }
            start += length
            heads += 1
        }
        return heads
    }

    /// The field names clients send with nearly every hit (curl, qemu's curl driver, wrk,
    /// python's http.client, keystoneauth), spelled as sent, as the same constant strings each
    /// time: decoding a name anew cost about 200 instructions, four or five times per hit.
    /// nil for any other name, which is decoded.
    static func commonName(_ name: UnsafeRawBufferPointer) -> String? {
        func spelled(_ word: StaticString) -> Bool { spells(name, at: 0, word) }
        switch name.count {
        case 4: return spelled("Host") ? "Host" : spelled("host") ? "host" : nil
        case 5: return spelled("Range") ? "Range" : spelled("range") ? "range" : nil
        case 6: return spelled("Accept") ? "Accept" : spelled("accept") ? "accept" : nil
        case 8: return spelled("If-Range") ? "If-Range" : spelled("if-range") ? "if-range" : nil
        case 10:
            if spelled("User-Agent") { return "User-Agent" }
            if spelled("user-agent") { return "user-agent" }
            if spelled("Connection") { return "Connection" }
            return spelled("connection") ? "connection" : nil
        case 12: return spelled("X-Auth-Token") ? "X-Auth-Token" : spelled("x-auth-token") ? "x-auth-token" : nil
        case 13: return spelled("If-None-Match") ? "If-None-Match" : spelled("if-none-match") ? "if-none-match" : nil
        case 15: return spelled("Accept-Encoding") ? "Accept-Encoding" : spelled("accept-encoding") ? "accept-encoding" : nil
        default: return nil
        }
    }

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let sp = UInt8(ascii: " ")
    private static let tab = UInt8(ascii: "\t")

    /// One pass over the head: the method, the target's bytes and the head's length, each
    /// field's name and value handed to `field` as they are found.
    private static func scan(
        _ all: UnsafeRawBufferPointer, field: (UnsafeRawBufferPointer, Range<Int>, Range<Int>) -> Void
    ) -> (HTTPMethod, Range<Int>, Int)? {
        let bytes = UnsafeRawBufferPointer(rebasing: all[..<min(all.count, maximumLength)])
        let n = bytes.count
        var i = 0
        let method: HTTPMethod
        if n >= 4, bytes[0] == UInt8(ascii: "G"), bytes[1] == UInt8(ascii: "E"), bytes[2] == UInt8(ascii: "T"), bytes[3] == sp {
            method = .GET
            i = 4
        } else if n >= 5, bytes[0] == UInt8(ascii: "H"), bytes[1] == UInt8(ascii: "E"), bytes[2] == UInt8(ascii: "A"),
            bytes[3] == UInt8(ascii: "D"), bytes[4] == sp
        {
            method = .HEAD
            i = 5
        } else {
            return nil
        }
        let targetStart = i
        guard i < n, bytes[i] == UInt8(ascii: "/") else { return nil }
        while i < n, bytes[i] > sp, bytes[i] < 0x7F, bytes[i] != UInt8(ascii: "#") { i += 1 }
        let target = targetStart..<i
        guard i + 11 <= n, bytes[i] == sp else { return nil }
        i += 1
        // One comparison of ten bytes: iterating the literal's UTF-8 view cost more than the
        // rest of the request line.
        let version: StaticString = "HTTP/1.1\r\n"
        guard spells(bytes, at: i, version) else { return nil }
        i += version.utf8CodeUnitCount
        var count = 0
        var seen: UInt8 = 0
        while true {
            guard i + 1 < n else { return nil }
            if bytes[i] == cr {
                guard bytes[i + 1] == lf else { return nil }
                return (method, target, i + 2)
            }
            let nameStart = i
            while i < n, isTokenCharacter(bytes[i]) { i += 1 }
            guard i < n, i > nameStart, bytes[i] == UInt8(ascii: ":") else { return nil }
            let name = nameStart..<i
            i += 1
            while i < n, isWhitespace(bytes[i]) { i += 1 }
            let valueStart = i
            while i < n, isFieldValueByte(bytes[i]) { i += 1 }
            // Trailing whitespace is not taken off the same way by every reader (llhttp keeps a
            // tab there): such a field is the decoder's.
            guard i + 1 < n, bytes[i] == cr, bytes[i + 1] == lf, i == valueStart || !isWhitespace(bytes[i - 1]) else { return nil }
            let valueEnd = i
            i += 2
            count += 1
            guard count <= maximumFields, acceptable(bytes, name: name, value: valueStart..<valueEnd) else { return nil }
            // A field that may come once, the second time, is the codec's: `Connection` (NIO's
            // decoder and `HTTPHeaders` differ on keep-alive), `Host` (RFC 9112 section 3.2:
            // 400) and `X-Auth-Token` (Glance sees the values joined, a token no one issued).
            let once: UInt8
            switch name.count {
            case 4: once = equalsLowercased(bytes, name, "host") ? 1 : 0
            case 10: once = equalsLowercased(bytes, name, "connection") ? 2 : 0
            case 12: once = equalsLowercased(bytes, name, "x-auth-token") ? 4 : 0
            default: once = 0
            }
            if once != 0 {
                guard seen & once == 0 else { return nil }
                seen |= once
            }
            field(bytes, name, valueStart..<valueEnd)
        }
    }

    /// False for the fields that give the request a body or change the connection.
    private static func acceptable(_ bytes: UnsafeRawBufferPointer, name: Range<Int>, value: Range<Int>) -> Bool {
        switch name.count {
        case 6: return !equalsLowercased(bytes, name, "expect")
        case 7: return !equalsLowercased(bytes, name, "upgrade")
        case 10: return !equalsLowercased(bytes, name, "connection") || equalsLowercased(bytes, value, "keep-alive")
        case 14: return !equalsLowercased(bytes, name, "content-length")
        case 17: return !equalsLowercased(bytes, name, "transfer-encoding")
        default: return true
        }
    }

    /// Whether `bytes` holds exactly `word` from `offset` on, compared in one `memcmp`; the
    /// caller has checked that `word`'s length fits.
    @inline(__always)
    private static func spells(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ word: StaticString) -> Bool {
        memcmp(bytes.baseAddress! + offset, word.utf8Start, word.utf8CodeUnitCount) == 0
    }

    private static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ word: StaticString) -> Bool {
        guard range.count == word.utf8CodeUnitCount else { return false }
        let letters = UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for (offset, letter) in letters.enumerated() {
            var c = bytes[range.lowerBound + offset]
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c += 32 }
            guard c == letter else { return false }
        }
        return true
    }

    /// A byte taken into a field value: visible ASCII, space or tab (RFC 9110 section 5.5,
    /// without `obs-text`). `RepeatedHead` checks a repeated head's `Range` value with it too.
    @inline(__always)
    static func isFieldValueByte(_ c: UInt8) -> Bool { (c >= sp && c < 0x7F) || c == tab }

    /// Optional whitespace around a field value: space or tab (RFC 9110 section 5.6.3).
    @inline(__always)
    static func isWhitespace(_ c: UInt8) -> Bool { c == sp || c == tab }

    /// RFC 9110 section 5.6.2's `tchar`: one bit per ASCII byte, in two words, so a name's
    /// bytes are tested with a shift each rather than a chain of ranges.
    @inline(__always)
    static func isTokenCharacter(_ c: UInt8) -> Bool {
        c < 64 ? (tokenBitsLow >> UInt64(c)) & 1 != 0 : c < 128 && (tokenBitsHigh >> UInt64(c - 64)) & 1 != 0
    }

    /// Bits 0-63 and 64-127 of `tchar` (`!#$%&'*+-.`, the digits; the letters and ``^_`|~``),
    /// as constants so the test is a shift and a mask (`WireRequestHeadTests` rebuilds them
    /// from the RFC's list).
    static let tokenBitsLow: UInt64 = 0x03FF_6CFA_0000_0000
    static let tokenBitsHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE
}
