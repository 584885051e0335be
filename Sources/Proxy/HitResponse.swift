import BlobStore
import HTTPCore
import HTTPSemantics
import Metrics
import NIOCore
import NIOHTTP1
import Synchronization

/// A complete answer from a committed blob. Carries out a `ResponsePlan` the same way on both
/// paths that serve hits: the event-loop fast path and the async handler.
typealias HitResponse = PlannedResponse

extension PlannedResponse {
    /// The plan's head, its literal parts as bytes and its representation ranges as zero-copy
    /// regions of the blob.
    /// - Parameters:
    ///   - wireHead: write the head in wire form (`encodedHead`) for `WireFastPath`, instead
    ///     of NIO's head model for the codec and a task's writer.
    ///   - representationFields: the representation's fields in wire form, made once
    ///     (`ByteBuffer.encodedFields` of `ResponsePlan.representationFields`), copied whole
    ///     instead of written field by field.
    /// - Precondition: `reader` holds the representation the plan was made for (same size).
    init(
        plan: ResponsePlan, version: HTTPVersion, reader: BlobReader, allocator: ByteBufferAllocator, wireHead: Bool = false,
        representationFields: [UInt8]? = nil
    ) {
        var handle: NIOFileHandle?
        var body: [IOData] = []
        plan.forEachSegment { segment in
            switch segment {
            case let .literal(bytes):
                body.append(.byteBuffer(allocator.buffer(bytes: bytes)))
            case let .representation(range):
                // Borrows the reader's descriptor (no dup): the reader is kept open between
                // hits and stays alive until `release()`.
                if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: reader.fileDescriptor) }
                var start = Int(range.lowerBound)
                let end = Int(range.upperBound) + 1
                while start < end {
                    let next = min(end, start + Self.regionBytes)
                    body.append(.fileRegion(FileRegion(fileHandle: handle!, readerIndex: start, endIndex: next)))
                    start = next
                }
            }
        }
        let status = HTTPResponseStatus(statusCode: plan.status)
        guard wireHead else {
            let head = HTTPResponseHead(version: version, status: status, headers: plan.httpHeaders(cacheResult: "hit"))
            self.init(head: head, body: body, handle: handle, descriptorOwner: reader, cacheResult: "hit")
            return
        }
        var encoded = allocator.buffer(capacity: 512)  // a hit's head is about 380 bytes
        encoded.writeHead(of: plan, version: version, status: status, cacheResult: "hit", representationFields: representationFields)
        self.init(encodedHead: encoded, version: version, status: status, body: body, handle: handle, descriptorOwner: reader, cacheResult: "hit")
    }

    /// The most one file region sends (nginx's `sendfile_max_chunk` default). The idle timeout
    /// counts a write as progress when it completes, and a region completes only once all its
    /// bytes are sent: a whole image in one region made a download longer than
    /// `limits.idle_timeout` (a large image, a slow link) look idle, and it was cut off.
    static let regionBytes = 2 << 20
}

/// `depot_http_requests_total` and `depot_http_request_duration_seconds` of the fast path
/// (route `image_file`), their handles made once: making one looks it up in the metrics
/// registry (a lock, the name's validation, a dictionary of labels) on every request.
/// Made lazily, after the metrics system is bootstrapped.
final class FastPathMetrics: Sendable {
    /// A list, not a table keyed by status: the fast path answers a handful of statuses, and
    /// finding one among them costs less than hashing it (about 150 instructions per hit).
    private let handles = Mutex<(counters: [(status: UInt, counter: Counter)], timer: Timer?)>(([], nil))

    /// - Parameter nanoseconds: the request's duration. In nanoseconds, not a `Duration`:
    ///   `Timer.record(duration:)` takes a `Duration` apart with two 128-bit divisions.
    func record(status: UInt, nanoseconds: Int64) {
        let (counter, timer) = handles.withLock { handles in
            let counter = handles.counters.first { $0.status == status }?.counter ?? {
                let made = Counter(label: "depot_http_requests_total", dimensions: [("route", "image_file"), ("status", String(status))])
                handles.counters.append((status, made))
                return made
            }()
            let timer = handles.timer ?? Timer(label: "depot_http_request_duration_seconds", dimensions: [("route", "image_file")])
            handles.timer = timer
            return (counter, timer)
        }
        counter.increment()
        timer.recordNanoseconds(nanoseconds)
    }
}

extension ByteBuffer {
    /// Writes the head of a response carrying out `plan`, with `x-depot-cache` last, as NIO's
    /// `HTTPResponseEncoder` writes `HTTPResponseHead(version:status:headers:
    /// plan.httpHeaders(cacheResult:))`, without the model: one length count and one copy of
    /// each string. The encoder changes no field of such a head: every plan states
    /// `Content-Length`, except a 304's, which has no body and no framing field
    /// (`ResponsePlan`), so it is never chunked. `HitResponseTests` compares the two.
    /// - Parameter representationFields: `encodedFields` of
    ///   `ResponsePlan.representationFields(plan.representation)`, made once per
    ///   representation: for a whole image or one range (every hit but a multipart, 304 or 416
    ///   one), the head is then that copy and the framing's numbers written as digits.
    /// - Parameter date: the `Date` field's value (`HTTPDate`), the current second's unless given.
    mutating func writeHead(
        of plan: ResponsePlan, version: HTTPVersion, status: HTTPResponseStatus, cacheResult: String, representationFields: [UInt8]? = nil,
        date: [UInt8] = HTTPDate.now()
    ) {
        assert(representationFields.map { $0 == Self.encodedFields(ResponsePlan.representationFields(plan.representation)) } ?? true, "fields of another representation")
        var statusLine = ByteBuffer.statusLine(version: version, status: status)
        var cacheValue = cacheResult
        let fields = plan.headers(after: representationFields)
        var length = statusLine.utf8.count + (representationFields?.count ?? 0) + Self.dateName.count + date.count + 2 + Self.cacheName.count + cacheValue.utf8.count + 4
        switch fields {
        case let .headers(headers): for field in headers { length += field.name.utf8.count + field.value.utf8.count + 4 }
        case .lengthAndRange: length += Self.lengthName.count + DecimalDigits.maxCount + Self.rangeName.count + ResponsePlan.contentRangeMaxCount + 4
        }
        writeWithUnsafeMutableBytes(minimumWritableBytes: length) { raw in
            let out = raw.bindMemory(to: UInt8.self)
            var at = 0
            Self.copy(&statusLine, to: raw, at: &at)
            switch fields {
            case let .headers(headers):
                for field in headers {
                    var name = field.name
                    var value = field.value
                    Self.copyField(&name, &value, to: raw, at: &at)
                }
            case let .lengthAndRange(range):
                Self.copy(representationFields!, to: out, at: &at)
                Self.copy(Self.lengthName, to: out, at: &at)
                DecimalDigits.write(range.map { $0.byteCount } ?? plan.representation.size, to: out, at: &at)
                Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: raw, at: &at)
                if let range {
                    Self.copy(Self.rangeName, to: out, at: &at)
                    ResponsePlan.writeContentRange(range, size: plan.representation.size, to: out, at: &at)
                    Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: raw, at: &at)
                }
            }
            Self.copy(Self.dateName, to: out, at: &at)
            Self.copy(date, to: out, at: &at)
            Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: raw, at: &at)
            Self.copy(Self.cacheName, to: out, at: &at)
            Self.copy(&cacheValue, to: raw, at: &at)
            Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: raw, at: &at)
            Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: raw, at: &at)
            // `length` bounds every byte written above; past it, memory was overwritten.
            precondition(at <= raw.count, "a head of \(at) bytes in \(raw.count)")
            return at
        }
    }

    /// `fields` as a head carries them (`name: value` and CRLF each), to be copied whole.
    static func encodedFields(_ fields: [HeaderField]) -> [UInt8] {
        var bytes: [UInt8] = []
        for field in fields {
            bytes += field.name.utf8
            bytes += ": ".utf8
            bytes += field.value.utf8
            bytes += "\r\n".utf8
        }
        return bytes
    }

    private static let cacheName = Array("x-depot-cache: ".utf8)
    private static let dateName = Array("date: ".utf8)
    private static let lengthName = Array("content-length: ".utf8)
    private static let rangeName = Array("content-range: ".utf8)

    private static func copy(_ bytes: [UInt8], to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        bytes.withUnsafeBufferPointer { bytes in
            guard let from = bytes.baseAddress, bytes.count > 0 else { return }
            (out.baseAddress! + at).update(from: from, count: bytes.count)
            at += bytes.count
        }
    }
}

extension ResponsePlan {
    /// What a head of this plan carries after `representationFields`: for a whole image or one
    /// range, when those fields are given, only the framing's numbers; else every field.
    enum WireFields {
        case headers([HeaderField])
        /// `Content-Length` (of the range, or the whole size), then `Content-Range` of a range.
        case lengthAndRange(ClosedRange<UInt64>?)
    }

    func headers(after representationFields: [UInt8]?) -> WireFields {
        guard representationFields != nil else { return .headers(headers) }
        switch framing {
        case .whole: return .lengthAndRange(nil)
        case let .range(range): return .lengthAndRange(range)
        case .notModified, .multipart, .unsatisfiable, .preconditionFailed: return .headers(headers)
        }
    }
}
