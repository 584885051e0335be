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
    /// - Precondition: `reader` holds the representation the plan was made for (same size).
    init(plan: ResponsePlan, version: HTTPVersion, reader: BlobReader, allocator: ByteBufferAllocator) {
        var handle: NIOFileHandle?
        var body: [IOData] = []
        for segment in plan.body {
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
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: plan.status), headers: plan.httpHeaders(cacheResult: "hit"))
        self.init(head: head, body: body, handle: handle, descriptorOwner: reader, cacheResult: "hit")
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
    private let handles = Mutex<(counters: [UInt: Counter], timer: Timer?)>(([:], nil))

    func record(status: UInt, duration: Duration) {
        let (counter, timer) = handles.withLock { handles in
            let counter = handles.counters[status] ?? {
                let made = Counter(label: "depot_http_requests_total", dimensions: [("route", "image_file"), ("status", String(status))])
                handles.counters[status] = made
                return made
            }()
            let timer = handles.timer ?? Timer(label: "depot_http_request_duration_seconds", dimensions: [("route", "image_file")])
            handles.timer = timer
            return (counter, timer)
        }
        counter.increment()
        timer.record(duration: duration)
    }
}
