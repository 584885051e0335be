/// What HTTP serves of an image's data (RFC 9110 section 3.2): everything a serving path
/// knows before it has any of the bytes, so that every path decides from the same facts.
public struct Representation: Sendable, Equatable {
    /// Bytes in the image.
    public var size: UInt64
    /// The strong entity tag, quoted (`"…"`); nil when the image has no hash to name it by.
    public var entityTag: String?
    /// Glance's `checksum` (hex MD5), sent as `Content-MD5` the way Glance sends it
    /// (`glance/api/v2/image_data.py`, `ResponseSerializer.download`).
    public var contentMD5: String?

    public init(size: UInt64, entityTag: String?, contentMD5: String?) {
        self.size = size
        self.entityTag = entityTag
        self.contentMD5 = contentMD5
    }
}

/// The parts of a request head that decide a response to `GET` or `HEAD` of a representation.
public struct RepresentationRequest: Sendable, Equatable {
    /// `GET` or `HEAD`: the only methods with a representation to send.
    public enum Method: Sendable, Equatable {
        case get, head
    }

    public var method: Method
    public var range: String?
    public var ifRange: String?
    public var ifNoneMatch: String?
    public var ifMatch: String?

    public init(method: Method, range: String? = nil, ifRange: String? = nil, ifNoneMatch: String? = nil, ifMatch: String? = nil) {
        self.method = method
        self.range = range
        self.ifRange = ifRange
        self.ifNoneMatch = ifNoneMatch
        self.ifMatch = ifMatch
    }
}

/// One header field of a planned response, in the order it is sent.
public struct HeaderField: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// The complete answer to a `GET` or `HEAD` of a representation: status, header fields and
/// the body as literal bytes and byte ranges of the representation, decided before any byte
/// is read.
///
/// Every serving path (a hit sent on the event loop or from a task, a running fill, a range
/// fetched ahead of a fill, a stream without a copy, TLS) carries out the same plan, so they
/// cannot disagree on status, headers or bytes. The rules, in RFC 9110's order
/// (section 13.2.2): `If-Match` first (412 when it does not match, section 13.1.1); then
/// `If-None-Match` (304 for a match); then `Range`, honoured only for
/// `GET` (section 14.2) and only when `If-Range` allows it (section 13.1.5); an unsatisfiable
/// range gets 416 with `Content-Range: bytes */size` (section 15.5.17); several ranges get
/// `multipart/byteranges` (section 14.6).
public struct ResponsePlan: Sendable, Equatable {
    /// A piece of the body: bytes the plan carries itself, or a range of the representation.
    public enum Segment: Sendable, Equatable {
        case literal([UInt8])
        case representation(ClosedRange<UInt64>)
    }

    /// What the fields after the representation's own say about the body.
    public enum Framing: Sendable, Equatable {
        /// 304: the validators only (no `Content-Type`, no length).
        case notModified
        /// 200: the whole representation (`Content-Length` its size, a `HEAD` included).
        case whole
        /// 206 with one range: `Content-Length` and `Content-Range` of it.
        case range(ClosedRange<UInt64>)
        /// 206 with several ranges: a `multipart/byteranges` body of this type and length.
        case multipart(contentType: String, length: UInt64)
        /// 416: a JSON body of this length and `Content-Range: bytes */size`.
        case unsatisfiable(length: UInt64)
        /// 412: a JSON body of this length.
        case preconditionFailed(length: UInt64)
    }

    /// The HTTP status code.
    public let status: Int
    /// The representation the plan is for: its fields lead the head.
    public let representation: Representation
    /// The fields that follow the representation's (see `headers`).
    public let framing: Framing
    /// The body; empty for `HEAD`, 304 and empty representations. Made when asked for:
    /// `forEachSegment` walks it without an array.
    public var body: [Segment] { single.map { [.representation($0)] } ?? parts }
    /// The one range of the representation a 200 or a single-range 206 sends: held as itself,
    /// not as a one-element list, so that planning a range hit allocates nothing for its
    /// body (an array for the parsed ranges and another for the body: together with reading
    /// the range without a list, about 800 instructions of a 4 KiB range hit).
    private let single: ClosedRange<UInt64>?
    /// Any other body: a multipart's parts, a 416's JSON; empty without a body.
    private let parts: [Segment]
    /// Bytes in the body (what `Content-Length` states, except for `HEAD`, where it states
    /// the length a `GET` would have).
    public let bodyLength: UInt64

    /// Plans the response to `request` for `representation`.
    public init(_ request: RepresentationRequest, for representation: Representation) {
        guard var header = request.range else {
            self.init(request, rangeBytes: nil, for: representation)
            return
        }
        self = header.withUTF8 { Self(request, rangeBytes: $0, for: representation) }
    }

    /// Plans the response to `request`, with `range` (a `Range` field's value, nil: none) in
    /// place of `request.range`, for `representation`. For a caller that holds the field's
    /// bytes: a connection's repeated head (`WireFastPath`) carries a new range in its bytes,
    /// and a `String` of one cost about 650 instructions of a range hit (its allocation, its
    /// UTF-8 check, its release). The answer is the one a `String` of the bytes would get:
    /// the grammar is ASCII, and a byte the UTF-8 check would replace is not ASCII either.
    /// - Parameter range: valid for the call only.
    public init(_ request: RepresentationRequest, range: UnsafeRawBufferPointer?, for representation: Representation) {
        self.init(request, rangeBytes: range.map { $0.assumingMemoryBound(to: UInt8.self) }, for: representation)
    }

    private init(_ request: RepresentationRequest, rangeBytes: UnsafeBufferPointer<UInt8>?, for representation: Representation) {
        let size = representation.size
        if let ifMatch = request.ifMatch, !ConditionalRequest.matchMatches(ifMatch, etag: representation.entityTag) {
            let json = Array(#"{"error":{"code":412,"message":"If-Match names none of this image's current entity tags (its ETag is \#(representation.entityTag ?? "none")); ask again without If-Match or with that tag","title":"Precondition Failed"}}"#.utf8)
            self.init(status: 412, representation, .preconditionFailed(length: UInt64(json.count)), body: request.method == .head ? [] : [.literal(json)], bodyLength: UInt64(json.count))
            return
        }
        if ConditionalRequest.noneMatchMatches(request.ifNoneMatch, etag: representation.entityTag) {
            self.init(status: 304, representation, .notModified, body: [], bodyLength: 0)
            return
        }
        var ranges = RangeRequest.whole
        if request.method == .get, let rangeBytes,
           ConditionalRequest.ifRangeAllowsRange(request.ifRange, etag: representation.entityTag) {
            let header = RangeBytes(bytes: rangeBytes)
            switch RangeRequest.parseOne(header, size: size) {
            case let .satisfiable(range):
                self.init(status: 206, representation, .range(range), single: range, bodyLength: range.byteCount)
                return
            case .unsatisfiable: ranges = .unsatisfiable
            case nil: ranges = RangeRequest.parse(header, size: size)
            }
        }
        let isHead = request.method == .head
        switch ranges {
        case .whole:
            self.init(status: 200, representation, .whole, single: isHead || size == 0 ? nil : 0...(size - 1), bodyLength: size)
        case let .ranges(list) where list.count == 1:
            self.init(status: 206, representation, .range(list[0]), single: list[0], bodyLength: list[0].byteCount)
        case let .ranges(list):
            let framing = MultipartByteRanges(ranges: list, size: size, boundarySeed: representation.entityTag)
            guard let length = framing.contentLength else {
                // A multipart body longer than a Content-Length can state: the whole
                // representation instead, as a server may ignore Range (RFC 9110 section 14.2).
                self.init(status: 200, representation, .whole, single: size == 0 ? nil : 0...(size - 1), bodyLength: size)
                return
            }
            self.init(
                status: 206, representation, .multipart(contentType: framing.contentType, length: length), body: framing.segments, bodyLength: length)
        case .unsatisfiable:
            let json = Array(#"{"error":{"code":416,"message":"the requested range is not satisfiable for an image of \#(size) bytes; ask for bytes below \#(size)","title":"Range Not Satisfiable"}}"#.utf8)
            self.init(status: 416, representation, .unsatisfiable(length: UInt64(json.count)), body: [.literal(json)], bodyLength: UInt64(json.count))
        }
    }

    /// Header fields in sending order (without the per-response `x-depot-…` fields): the
    /// representation's (`representationFields`), then the framing's. Made when asked for: a
    /// hit written from the wire writes the same fields without them (`Content-Length` and
    /// `Content-Range` cost two strings per hit).
    public var headers: [HeaderField] {
        var headers = Self.representationFields(representation)
        headers.reserveCapacity(headers.count + 2)
        let size = representation.size
        switch framing {
        case .notModified:
            // 304 carries the validators, not the content's metadata (section 15.4.5).
            headers.removeAll { $0.name == "content-type" }
        case .whole:
            headers.append(HeaderField("content-length", String(size)))
        case let .range(range):
            headers.append(HeaderField("content-length", String(range.byteCount)))
            headers.append(HeaderField("content-range", Self.contentRange(range, size: size)))
        case let .multipart(contentType, length):
            headers[0] = HeaderField("content-type", contentType)
            headers.append(HeaderField("content-length", String(length)))
        case let .unsatisfiable(length):
            headers[0] = HeaderField("content-type", "application/json")
            // `Content-MD5` is the digest of a body (RFC 1864): this one is the JSON, not the image.
            headers.removeAll { $0.name == "content-md5" }
            headers.append(HeaderField("content-length", String(length)))
            headers.append(HeaderField("content-range", "bytes */\(size)"))
        case let .preconditionFailed(length):
            headers[0] = HeaderField("content-type", "application/json")
            headers.removeAll { $0.name == "content-md5" }
            headers.append(HeaderField("content-length", String(length)))
        }
        return headers
    }

    /// The fields a response of `representation` starts with, in sending order: its type
    /// (`Content-Type` first, which multipart and 416 framings replace), `Accept-Ranges`, and
    /// its validators (`Content-MD5` and `ETag`, as Glance sends them).
    public static func representationFields(_ representation: Representation) -> [HeaderField] {
        // Room for every field a plan adds (a literal of two would grow twice on each hit).
        var headers: [HeaderField] = []
        headers.reserveCapacity(6)
        headers.append(HeaderField("content-type", "application/octet-stream"))
        headers.append(HeaderField("accept-ranges", "bytes"))
        if let md5 = representation.contentMD5 { headers.append(HeaderField("content-md5", md5)) }
        if let etag = representation.entityTag { headers.append(HeaderField("etag", etag)) }
        return headers
    }

    /// `bytes FIRST-LAST/SIZE` (RFC 9110 section 14.4), its digits written straight into the
    /// string: interpolating three integers cost about 2k instructions on every range hit.
    static func contentRange(_ range: ClosedRange<UInt64>, size: UInt64) -> String {
        String(unsafeUninitializedCapacity: contentRangeMaxCount) { out in
            var at = 0
            writeContentRange(range, size: size, to: out, at: &at)
            return at
        }
    }

    /// The most bytes `writeContentRange` writes: "bytes " and three numbers, "-" and "/".
    public static let contentRangeMaxCount = 6 + 3 * DecimalDigits.maxCount + 2

    /// Writes the `Content-Range` value `bytes FIRST-LAST/SIZE` at `at` in `out` (which has
    /// room for `contentRangeMaxCount` bytes there), moving `at` past it.
    public static func writeContentRange(_ range: ClosedRange<UInt64>, size: UInt64, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        for byte in "bytes ".utf8 {
            out[at] = byte
            at += 1
        }
        DecimalDigits.write(range.lowerBound, to: out, at: &at)
        out[at] = UInt8(ascii: "-")
        at += 1
        DecimalDigits.write(range.upperBound, to: out, at: &at)
        out[at] = UInt8(ascii: "/")
        at += 1
        DecimalDigits.write(size, to: out, at: &at)
    }

    private init(status: Int, _ representation: Representation, _ framing: Framing, body: [Segment], bodyLength: UInt64) {
        self.status = status
        self.representation = representation
        self.framing = framing
        // A lone range is held as `single` whichever way it came, so that `==` (on the
        // stored properties) compares bodies.
        if body.count == 1, case let .representation(range) = body[0] {
            (single, parts) = (range, [])
        } else {
            (single, parts) = (nil, body)
        }
        self.bodyLength = bodyLength
    }

    private init(status: Int, _ representation: Representation, _ framing: Framing, single: ClosedRange<UInt64>?, bodyLength: UInt64) {
        self.status = status
        self.representation = representation
        self.framing = framing
        self.single = single
        self.parts = []
        self.bodyLength = bodyLength
    }

    /// Calls `visit` with each piece of `body`, in order, without making the array.
    public func forEachSegment(_ visit: (Segment) throws -> Void) rethrows {
        if let single {
            try visit(.representation(single))
        } else {
            for segment in parts { try visit(segment) }
        }
    }

    /// The representation's ranges the body sends, in order.
    public var ranges: [ClosedRange<UInt64>] {
        body.compactMap { segment in
            if case let .representation(range) = segment { return range }
            return nil
        }
    }

    /// Whether the body ends with the representation's last byte (of `size` bytes): a path
    /// sending bytes that are not yet verified holds that byte until the whole image is.
    public func carriesLastByte(ofSize size: UInt64) -> Bool {
        size > 0 && ranges.last?.upperBound == size - 1
    }

    /// The value of a header field, if the plan has it.
    public func header(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }
}

/// The framing of a `multipart/byteranges` body (RFC 9110 section 14.6).
public struct MultipartByteRanges: Sendable {
    public let ranges: [ClosedRange<UInt64>]
    public let size: UInt64
    public let boundary: String

    /// - Parameter boundarySeed: what names the representation (its entity tag): the same
    ///   representation gets the same boundary on every path, so its answers are identical
    ///   byte for byte, and a body cannot contain a boundary derived from its own hash.
    public init(ranges: [ClosedRange<UInt64>], size: UInt64, boundarySeed: String?) {
        self.ranges = ranges
        self.size = size
        // FNV-1a: stable across processes and platforms (Swift's Hasher is seeded per process).
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (boundarySeed ?? "size \(size)").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        boundary = "depot-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    public var contentType: String { "multipart/byteranges; boundary=\(boundary)" }

    public func partHeader(_ index: Int) -> String {
        let range = ranges[index]
        return "\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(range.lowerBound)-\(range.upperBound)/\(size)\r\n\r\n"
    }

    public var closing: String { "\r\n--\(boundary)--\r\n" }

    /// The body: each part's header, then its bytes; then the closing delimiter.
    public var segments: [ResponsePlan.Segment] {
        ranges.indices.flatMap { index -> [ResponsePlan.Segment] in
            [.literal(Array(partHeader(index).utf8)), .representation(ranges[index])]
        } + [.literal(Array(closing.utf8))]
    }

    /// The body's length in bytes; nil when it is more than 2^64 - 1, which only a
    /// representation within a few hundred bytes of that size can give (its parts' headers
    /// on top of its bytes): the sum trapped, on the event loop. Glance's sizes stop at
    /// 2^63 - 1 (`JSONValue.uint64Value`), so this guards plans made from other sizes.
    public var contentLength: UInt64? {
        var total = UInt64(closing.utf8.count)
        for index in ranges.indices {
            let (withHeader, headerOverflow) = total.addingReportingOverflow(UInt64(partHeader(index).utf8.count))
            let (withBytes, bytesOverflow) = withHeader.addingReportingOverflow(ranges[index].byteCount)
            guard !headerOverflow, !bytesOverflow else { return nil }
            total = withBytes
        }
        return total
    }
}

extension ClosedRange where Bound == UInt64 {
    /// Bytes in an inclusive byte range.
    public var byteCount: UInt64 { upperBound - lowerBound + 1 }
}
