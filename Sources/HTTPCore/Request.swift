import NIOCore
import NIOHTTP1

/// A request as handlers see it; the body is read on demand.
public struct Request: Sendable {
    public let head: HTTPRequestHead
    public let body: RequestBody
    /// Names this request in every log line about it.
    public let id: String

    public var method: HTTPMethod { head.method }
    public var uri: String { head.uri }
    public var headers: HTTPHeaders { head.headers }
    /// The path, without the query.
    public var path: Substring { head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
}

/// Handles one request; writes its answer through the `ResponseWriter`.
public protocol RequestHandler: Sendable {
    func handle(_ request: Request, _ response: ResponseWriter) async
    /// Called once the answer is written (or abandoned), for access logs and metrics.
    func responded(_ request: Request, _ response: ResponseWriter, duration: Duration)
}

extension RequestHandler {
    public func responded(_ request: Request, _ response: ResponseWriter, duration: Duration) {}
}

/// A short random id for a request (16 hex digits).
func makeRequestID() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 16).leftPadded(to: 16)
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

extension HTTPRequestHead {
    /// The client sent `Expect: 100-continue` and waits before sending its body.
    public var expectsContinue: Bool {
        headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }

    /// The request asks to switch protocols: `CONNECT`, or an `Upgrade` field with `upgrade`
    /// among the `Connection` options (RFC 9110 section 7.8) — the test llhttp, NIO's parser,
    /// makes for its upgrade flag. After such a request NIO's `HTTPDecoder` stops parsing
    /// (`stopParsing` in `didFinishMessage`) and leaves the bytes that follow to an upgrade
    /// handler; Depot upgrades to nothing, so a next request on the connection would wait for
    /// an answer forever (`curl --http2` on an `http://` URL sends `Upgrade: h2c`).
    public var upgradesConnection: Bool {
        if method == .CONNECT { return true }
        guard headers.contains(name: "upgrade") else { return false }
        return headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
    }

    /// The connection carries the next request after this one's answer: the client asked to
    /// keep it (HTTP/1.1 unless `Connection: close`; HTTP/1.0 with `Connection: keep-alive`,
    /// RFC 9112 section 9.3) and did not ask to switch protocols, which Depot answers in
    /// HTTP/1.1 (RFC 9110 section 7.8 lets a server ignore `Upgrade`) and then closes.
    public var keepsConnection: Bool { isKeepAlive && !upgradesConnection }

    /// More than one `Host` field, which a server MUST answer with 400 (RFC 9112 section 3.2;
    /// Glance does).
    public var repeatsHost: Bool {
        var seen = false
        for (name, _) in headers where name.utf8.count == 4 && name.lowercased() == "host" {
            if seen { return true }
            seen = true
        }
        return false
    }
}

/// The request parts of one connection, shared by its requests in turn.
final class InboundParts: @unchecked Sendable {
    private var iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator

    init(_ iterator: NIOAsyncChannelInboundStream<HTTPServerRequestPart>.AsyncIterator) {
        self.iterator = iterator
    }

    func next() async throws -> HTTPServerRequestPart? {
        try await iterator.next()
    }
}

/// The connection ended in the middle of a request body.
public struct RequestBodyTruncated: Error, CustomStringConvertible {
    public var description: String { "the connection closed before the end of the request body" }
}

/// A request's body, read chunk by chunk as the handler asks for it.
public final class RequestBody: @unchecked Sendable {
    private let parts: InboundParts
    private let connection: HTTPConnectionState?
    private var ended: Bool
    /// The declared length, when the client sent Content-Length.
    public let declaredLength: UInt64?

    init(parts: InboundParts, head: HTTPRequestHead, connection: HTTPConnectionState? = nil) {
        self.parts = parts
        self.connection = connection
        self.declaredLength = head.headers.first(name: "content-length").flatMap { UInt64($0) }
        let chunked = head.headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
        self.ended = !chunked && (declaredLength ?? 0) == 0
    }

    /// Whether the request has a body at all.
    public var isEmpty: Bool { ended && declaredLength == nil }

    /// Whether the whole body has been read.
    public var isFinished: Bool { ended }

    /// The next chunk, or nil at the end of the body.
    public func next() async throws -> ByteBuffer? {
        guard !ended else { return nil }
        while let part = try await parts.next() {
            switch part {
            case let .body(buffer): return buffer
            case .end:
                ended = true
                _ = connection?.event(.requestBodyEnded)
                return nil
            case .head:
                throw HTTPParserError.invalidInternalState
            }
        }
        // The connection closed before the body's end: never mistake that for a whole body.
        ended = true
        throw RequestBodyTruncated()
    }

    /// Reads and discards the rest of the body, up to `limit` bytes; false when the body was
    /// longer (the connection is then not reusable).
    func drain(limit: Int) async throws -> Bool {
        var skipped = 0
        while let chunk = try await next() {
            skipped += chunk.readableBytes
            if skipped > limit { return false }
        }
        return true
    }
}
