import BlobStore
import Foundation
import Glance
import NIOCore
import NIOHTTP1

/// A complete answer from a committed blob, as the parts to write: the head, then bytes and
/// zero-copy file regions, then the end.
///
/// Built the same way on both paths that serve hits: the event-loop fast path and the async
/// handler. Everything is decided before the first byte is written.
struct HitResponse {
    let parts: [HTTPServerResponsePart]

    /// The status of the planned head.
    var status: HTTPResponseStatus {
        if case let .head(head) = parts.first { return head.status }
        return .ok
    }

    /// Body bytes the parts send.
    var bodyBytes: Int {
        parts.reduce(0) { total, part in
            guard case let .body(data) = part else { return total }
            return total + data.readableBytes
        }
    }
    /// The descriptor the file regions read from; close it once the last part is written.
    let handle: NIOFileHandle?

    init(head: HTTPRequestHead, image: GlanceImage, reader: BlobReader, allocator: ByteBufferAllocator) throws {
        let etag = "\"\(reader.digest.hex)\""
        var headers = ImageFileResponder.baseHeaders(image: image, cacheResult: "hit")
        headers.add(name: "etag", value: etag)
        let isHead = head.method == .HEAD
        var body: [IOData] = []
        var handle: NIOFileHandle?
        func region(_ range: ClosedRange<UInt64>) throws -> IOData {
            if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: try reader.duplicateDescriptor()) }
            return .fileRegion(FileRegion(fileHandle: handle!, readerIndex: Int(range.lowerBound), endIndex: Int(range.upperBound) + 1))
        }
        let status: HTTPResponseStatus
        let size = reader.size
        var ranges = RangeRequest.parse(head.headers.first(name: "range"), size: size)
        if !ConditionalRequest.ifRangeAllowsRange(head.headers.first(name: "if-range"), etag: etag) { ranges = .whole }
        if ConditionalRequest.noneMatchMatches(head.headers.first(name: "if-none-match"), etag: etag) {
            status = .notModified
            headers.remove(name: "content-type")
        } else {
            switch ranges {
            case .unsatisfiable:
                status = .rangeNotSatisfiable
                headers.add(name: "content-range", value: "bytes */\(size)")
                let json = "{\"error\": {\"code\": 416, \"title\": \"Range Not Satisfiable\", \"message\": \"the requested range is not satisfiable for an image of \(size) bytes\"}}"
                headers.replaceOrAdd(name: "content-type", value: "application/json")
                headers.add(name: "content-length", value: String(json.utf8.count))
                body = [.byteBuffer(allocator.buffer(string: json))]
            case .whole:
                status = .ok
                headers.add(name: "content-length", value: String(size))
                if size > 0 && !isHead { body = [try region(0...(size - 1))] }
            case let .ranges(list) where list.count == 1:
                status = .partialContent
                headers.add(name: "content-length", value: String(list[0].count))
                headers.add(name: "content-range", value: "bytes \(list[0].lowerBound)-\(list[0].upperBound)/\(size)")
                if !isHead { body = [try region(list[0])] }
            case let .ranges(list):
                status = .partialContent
                let multipart = Multipart(ranges: list, size: size)
                headers.replaceOrAdd(name: "content-type", value: multipart.contentType)
                headers.add(name: "content-length", value: String(multipart.contentLength))
                if !isHead {
                    for (index, range) in list.enumerated() {
                        body.append(.byteBuffer(allocator.buffer(string: multipart.partHeader(index))))
                        body.append(try region(range))
                    }
                    body.append(.byteBuffer(allocator.buffer(string: multipart.closing)))
                }
            }
        }
        if isHead { body = [] }
        self.parts = [.head(HTTPResponseHead(version: head.version, status: status, headers: headers))] + body.map { .body($0) } + [.end(nil)]
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
