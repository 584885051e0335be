import NIOCore
import NIOHTTP1

/// Turns a request target in absolute form (`GET http://depot:9494/v2/images HTTP/1.1`) into
/// its origin form (`/v2/images`), which every route expects. RFC 9112 section 3.2.2: a
/// server MUST accept the absolute form, and then uses its authority instead of `Host`.
final class AbsoluteFormTarget: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case var .head(head) = unwrapInboundIn(data), let (authority, target) = Self.split(head.uri) else {
            context.fireChannelRead(data)
            return
        }
        head.uri = target
        head.headers.replaceOrAdd(name: "host", value: authority)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// The authority and the origin-form target of an absolute-form `http` or `https` URI; nil
    /// for any other form.
    static func split(_ uri: String) -> (authority: String, target: String)? {
        let lowered = uri.prefix(8).lowercased()
        let schemeLength = lowered.hasPrefix("http://") ? 7 : lowered.hasPrefix("https://") ? 8 : 0
        guard schemeLength > 0 else { return nil }
        let rest = uri.dropFirst(schemeLength)
        let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = String(rest[..<end])
        guard !authority.isEmpty else { return nil }
        let remainder = rest[end...]
        return (authority, remainder.hasPrefix("/") ? String(remainder) : "/" + remainder)
    }
}

/// Answers a connection over the limit with 503 and closes it, without parsing its request.
final class ConnectionRefuser: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func channelActive(context: ChannelHandlerContext) {
        let body = #"{"error": {"code": 503, "title": "Service Unavailable", "message": "Depot has \#(limit) connections open, its limit (limits.max_connections); retry in a few seconds or reuse a connection"}}"#
        let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\nretry-after: 5\r\nconnection: close\r\n\r\n\(body)"
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
