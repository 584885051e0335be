import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Writes one response: a head, body parts (bytes or zero-copy file regions), an end.
///
/// A request's one writer: `HTTPServer` makes it and hands it to the `RequestHandler`.
///
/// Each write is awaited until the channel took it, so memory stays bounded by one chunk per
/// client however slow the client is. `abort` closes the connection mid-body, which a client
/// sees as a broken transfer, never as a complete one.
public final class ResponseWriter: @unchecked Sendable {
    let channel: Channel
    let version: HTTPVersion
    let isHead: Bool
    /// The request let the connection carry another after this answer (`keepsConnection`).
    let keepsConnection: Bool
    public private(set) var headSent = false
    private(set) var isComplete = false
    /// Set when the response asked to close the connection (or was aborted).
    private(set) var closesConnection = false
    /// Body bytes written, for logs and metrics.
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var status: HTTPResponseStatus?

    /// The request's id, sent back as `x-depot-request-id`.
    public let requestID: String
    /// Where the body came from (`x-depot-cache` of the head), for stats and the access log.
    public private(set) var cacheResult: String?

    /// Reads file regions into buffers when the channel encrypts (TLS) and cannot send a file
    /// region as it is; nil sends regions zero-copy.
    let fileReads: NonBlockingFileIO?

    /// The connection's state: `100 Continue` is sent once per request.
    let connection: HTTPConnectionState

    init(
        channel: Channel, connection: HTTPConnectionState, version: HTTPVersion, method: HTTPMethod, keepsConnection: Bool = true,
        requestID: String = makeRequestID(), fileReads: NonBlockingFileIO? = nil
    ) {
        self.channel = channel
        self.connection = connection
        self.version = version
        self.isHead = method == .HEAD
        self.keepsConnection = keepsConnection
        self.requestID = requestID
        self.fileReads = fileReads
    }

    public var allocator: ByteBufferAllocator { channel.allocator }

    /// Sends the status line and headers, with the `Connection` option that says what becomes
    /// of the connection after this answer (RFC 9112 section 9.3): `close` when the request or
    /// the response ends it, `keep-alive` to an HTTP/1.0 client that asked to keep it, which
    /// would otherwise take the connection for closed and wait for its end.
    public func head(_ status: HTTPResponseStatus, _ headers: HTTPHeaders) async throws {
        precondition(!headSent, "response head sent twice")
        headSent = true
        self.status = status
        var headers = headers
        headers.replaceOrAdd(name: "x-depot-request-id", value: requestID)
        cacheResult = headers.first(name: "x-depot-cache")
        // A forwarded answer keeps the backend's.
        if !headers.contains(name: "date") { headers.add(name: "date", value: String(decoding: HTTPDate.now(), as: UTF8.self)) }
        addConnectionOption(&headers)
        try await channel.writeAndFlush(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: status, headers: headers))).get()
    }

    /// Adds the `Connection` option of this answer and records whether it closes.
    private func addConnectionOption(_ headers: inout HTTPHeaders) {
        let isHTTP10 = version.major == 1 && version.minor == 0
        if headers.first(name: "connection")?.lowercased() == "close" || !keepsConnection
            // HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection.
            || (isHTTP10 && !headers.contains(name: "content-length"))
        {
            headers.replaceOrAdd(name: "connection", value: "close")
            closesConnection = true
        } else if isHTTP10 {
            headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
    }

    /// Tells a client that sent `Expect: 100-continue` to send its body.
    public func sendContinue() async throws {
        guard !headSent, connection.event(.continueRequested) == .sendContinue else { return }
        try await channel.writeAndFlush(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: .continue))).get()
    }

    /// Sends `100 Continue` when the request waits for it; false (and the connection closed)
    /// when that fails.
    public func continueIfExpected(_ request: Request) async -> Bool {
        guard request.head.expectsContinue else { return true }
        do {
            try await sendContinue()
            return true
        } catch {
            abort()
            return false
        }
    }

    /// Sends body bytes (not for HEAD requests, where bodies are skipped).
    public func body(_ buffer: ByteBuffer) async throws {
        guard !isHead, buffer.readableBytes > 0 else { return }
        bytesWritten += UInt64(buffer.readableBytes)
        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer))).get()
    }

    /// Sends a file region's bytes (not for HEAD requests): zero-copy (sendfile), or read into
    /// buffers a chunk at a time when the channel encrypts. Awaited until the channel took all
    /// of it, so a slow client holds back its sender, not memory.
    /// - Throws: the channel's error; `FileRegionShort` when the file ends before the region.
    public func body(_ region: FileRegion) async throws {
        guard !isHead, region.readableBytes > 0 else { return }
        bytesWritten += UInt64(region.readableBytes)
        if let fileReads {
            try await sendReading(region, with: fileReads)
            return
        }
        // A region the file does not hold is refused, as a short read is when reading for TLS:
        // sendfile at the end of a file sends nothing, and NIO retries it without end, a core
        // spinning for a client that never gets its bytes.
        let size = try region.fileHandle.withUnsafeFileDescriptor { fd -> Int in
            var info = stat()
            return fstat(fd, &info) == 0 ? Int(info.st_size) : -1
        }
        guard size >= region.endIndex else { throw FileRegionShort(expectedEnd: region.endIndex, end: max(size, region.readerIndex)) }
        try await channel.writeAndFlush(HTTPServerResponsePart.body(.fileRegion(region))).get()
    }

    /// Writes a response planned in full: all parts at once, awaiting only the last, then
    /// lets go of the file handle the regions read from.
    package func send(_ hit: PlannedResponse) async throws {
        precondition(!headSent, "response head sent twice")
        headSent = true
        isComplete = true
        status = hit.status
        cacheResult = hit.cacheResult
        bytesWritten += UInt64(hit.bodyBytes)
        defer { hit.release() }
        var parts = hit.parts
        if case var .head(head) = parts[0] {
            addConnectionOption(&head.headers)
            parts[0] = .head(head)
        }
        if let fileReads {
            try await sendReading(parts, with: fileReads)
            return
        }
        for part in parts.dropLast() { channel.write(part, promise: nil) }
        try await channel.writeAndFlush(parts.last!).get()
    }

    /// Writes a planned response whose file regions are read into buffers one chunk at a time,
    /// each awaited, so a slow TLS client holds one chunk in memory, not the image.
    private func sendReading(_ parts: [HTTPServerResponsePart], with fileReads: NonBlockingFileIO) async throws {
        for part in parts {
            guard case let .body(.fileRegion(region)) = part else {
                try await channel.writeAndFlush(part).get()
                continue
            }
            try await sendReading(region, with: fileReads)
        }
    }

    /// Sends a region's bytes read into buffers, one chunk at a time, each awaited.
    private func sendReading(_ region: FileRegion, with fileReads: NonBlockingFileIO) async throws {
        var offset = region.readerIndex
        while offset < region.endIndex {
            let count = min(Self.readChunkBytes, region.endIndex - offset)
            let chunk = try await fileReads.read(fileHandle: region.fileHandle, fromOffset: Int64(offset), byteCount: count, allocator: allocator)
            // A blob is never shorter than its catalogued size; if it is, the client must
            // see a broken transfer rather than wait.
            guard chunk.readableBytes > 0 else { throw FileRegionShort(expectedEnd: region.endIndex, end: offset) }
            try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(chunk))).get()
            offset += chunk.readableBytes
        }
    }

    /// The chunk size of hits read for TLS.
    static let readChunkBytes = 256 * 1024

    /// Ends the response. A client that closed right after the last body byte loses nothing,
    /// so a closed channel here is not an error.
    public func end() async throws {
        isComplete = true
        do {
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
        } catch ChannelError.ioOnClosedChannel {
            closesConnection = true
        }
    }

    /// Gives up on the response: closes the connection.
    public func abort() {
        closesConnection = true
        isComplete = true
        channel.close(promise: nil)
    }

    // MARK: Whole responses

    /// A complete response with a small body.
    public func send(_ status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) async {
        var headers = headers
        // A HEAD answer states the length its GET would have.
        if body != nil || !headers.contains(name: "content-length") {
            headers.replaceOrAdd(name: "content-length", value: String(body?.readableBytes ?? 0))
        }
        do {
            try await head(status, headers)
            if let body { try await self.body(body) }
            try await end()
        } catch {
            abort()
        }
    }

    /// A JSON body.
    public func sendJSON(_ status: HTTPResponseStatus, _ object: Any, headers: HTTPHeaders = [:]) async {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        var headers = headers
        headers.replaceOrAdd(name: "content-type", value: "application/json")
        await send(status, headers: headers, body: allocator.buffer(bytes: data))
    }

    /// Depot's error shape: `{"error": {"code", "title", "message"}}`, the message telling the
    /// user what to do.
    public func sendError(_ status: HTTPResponseStatus, _ message: String, headers: HTTPHeaders = [:]) async {
        await sendJSON(status, ["error": ["code": Int(status.code), "title": status.reasonPhrase, "message": message]], headers: headers)
    }
}
