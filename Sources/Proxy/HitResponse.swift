import BlobStore
import Foundation
import Glance
import HTTPSemantics
import Metrics
import NIOCore
import NIOHTTP1
import Synchronization

/// A complete answer from a committed blob, as the parts to write: the head, then bytes and
/// zero-copy file regions, then the end.
///
/// Carries out a `ResponsePlan` the same way on both paths that serve hits: the event-loop
/// fast path and the async handler (which reads the regions into buffers under TLS).
struct HitResponse {
    let parts: [HTTPServerResponsePart]
    let plan: ResponsePlan
    /// The descriptor the file regions read from; close it once the last part is written.
    let handle: NIOFileHandle?

    /// The status of the planned head.
    var status: HTTPResponseStatus { HTTPResponseStatus(statusCode: plan.status) }

    /// Body bytes the parts send.
    var bodyBytes: Int {
        parts.reduce(0) { total, part in
            guard case let .body(data) = part else { return total }
            return total + data.readableBytes
        }
    }

    /// - Precondition: `reader` holds the representation the plan was made for (same size).
    init(plan: ResponsePlan, version: HTTPVersion, reader: BlobReader, allocator: ByteBufferAllocator) throws {
        var handle: NIOFileHandle?
        var body: [IOData] = []
        for segment in plan.body {
            switch segment {
            case let .literal(bytes):
                body.append(.byteBuffer(allocator.buffer(bytes: bytes)))
            case let .representation(range):
                if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: try reader.duplicateDescriptor()) }
                body.append(.fileRegion(FileRegion(fileHandle: handle!, readerIndex: Int(range.lowerBound), endIndex: Int(range.upperBound) + 1)))
            }
        }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: plan.status), headers: plan.httpHeaders(cacheResult: "hit"))
        self.parts = [.head(head)] + body.map { .body($0) } + [.end(nil)]
        self.plan = plan
        self.handle = handle
    }
}

/// Answers requests on the event loop, without a hop to Swift concurrency, when everything
/// needed is already in memory (a cache hit with a still-valid decision for the token).
public protocol FastPathResponder: Sendable {
    /// The complete response, or nil to let the async handler take the request.
    func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator) -> ImmediateResponse?
}

/// A response the fast path writes at once.
public struct ImmediateResponse {
    let hit: HitResponse
    /// Runs once the last part is written (or the write failed).
    let completion: @Sendable () -> Void
}

/// Sits between the HTTP codec and the async handler: takes the requests the fast path can
/// answer, passes the rest on. It only answers when no earlier request of the connection is
/// still being answered by the async side, so pipelined responses keep their order.
final class FastPathHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: any FastPathResponder
    /// Requests passed on whose response has not ended yet.
    private var pending = 0
    /// Parts of a request answered here, to drop until its end.
    private var swallowing = false

    init(responder: any FastPathResponder) { self.responder = responder }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case let .head(head):
            if pending == 0, head.isKeepAlive, head.version == .http1_1, head.method == .GET || head.method == .HEAD,
               let response = responder.immediateResponse(to: head, allocator: context.channel.allocator) {
                swallowing = true
                let parts = response.hit.parts
                for part in parts.dropLast() { context.write(wrapOutboundOut(part), promise: nil) }
                let handle = response.hit.handle
                let completion = response.completion
                context.writeAndFlush(wrapOutboundOut(parts.last!)).whenComplete { _ in
                    try? handle?.close()
                    completion()
                }
                return
            }
            pending += 1
            context.fireChannelRead(data)
        case .body, .end:
            if swallowing {
                if case .end = part { swallowing = false }
                return
            }
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { pending = max(0, pending - 1) }
        context.write(data, promise: promise)
    }
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
