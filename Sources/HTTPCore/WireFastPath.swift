import NIOCore
import NIOHTTP1
import Synchronization

/// Answers cache hits from a connection's bytes, before NIO's HTTP codec: a hit's request head
/// is read by `WireRequestHead`, answered by the `FastPathResponder`, and its response written
/// as bytes and zero-copy file regions straight to the socket. The codec's decoder, pipeline
/// handler and encoder cost more than half of a small range's instructions; this path skips
/// them for the requests that make up most of a cache's traffic (VM streaming, qemu's curl
/// driver, segmented downloads).
///
/// It answers a request only where the codec would have answered it the same way, in order:
/// - the head is one `WireRequestHead` accepts (so the decoder would read it the same way);
/// - the codec holds no bytes of its own: every byte this handler passed on formed whole
///   heads it accepts, and the connection handler has seen as many heads as were passed on
///   (a pipelined request the codec is still holding counts as not seen);
/// - no earlier request is still being answered and the connection is not closing
///   (`HTTPConnectionStateMachine`), so responses keep their order;
/// - the channel is writable: a client that pipelines faster than it reads is left to the
///   codec, whose pipeline handler stops reading.
/// Anything else goes to the codec with every byte after it. Once a request with a body, an
/// incomplete head or anything this reader does not accept has gone to the codec, the whole
/// connection stays there.
///
/// The response's bytes are those NIO's `HTTPResponseEncoder` writes for the same head and
/// parts (`WireFastPathTests` compares them); the connection state sees the same events as
/// for an answer the connection handler writes.
final class WireFastPath: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = IOData

    private let fastPath: any FastPathResponder
    private let connection: HTTPConnectionHandler
    private let counters: ServerCounters
    /// Responses are corked when more connections than this are open (see `flushWritten`).
    private let corkAbove: Int
    /// Whether requests are answered here: false once bytes went to the codec and until it is
    /// known to be idle again.
    private var atRequestBoundary = true
    /// False once bytes that were not whole accepted heads went to the codec.
    private var codecStaysInStep = true
    /// Request heads passed to the codec, to compare with the heads the connection handler saw.
    private var headsPassedOn = 0
    /// Responses written and not yet flushed.
    private var unflushed = false
    /// Whether bytes went to the codec since the last read completed.
    private var passedOnThisRead = false
    /// Responses written here whose last byte has not left yet.
    private var inFlight = 0
    /// The first response written here and not yet known to have left (see `settle`).
    private var unsettled: Unsettled?
    /// Those written after it, in order: pipelined requests answered in one read.
    private var moreUnsettled: [Unsettled] = []
    /// Whether the last response written ended with a file region (a hit's body does; a
    /// multipart body's closing boundary, a chunked body's last chunk and a `HEAD` do not).
    private var lastEndsWithFileRegion = false
    /// The channel's options, asked for once: `syncOptions` looks its generic type's metadata
    /// up on every call. Set while the handler is in the pipeline (it holds the channel).
    private var options: ChannelOptionsBox?
    /// The connection's socket for `TCP_CORK`, looked up at its second corked answer.
    private var socket = CorkingSocket.firstAnswer
    /// The head of the last request answered here whose answer the responder can repeat for
    /// another range (see `RepeatedHead`).
    private var repeated: RepeatedHead?
    /// The client ended its side while responses written here were still going out: the
    /// codec's pipeline handler, which knows nothing of them, would close the connection at
    /// once, so it hears of the end when they have left.
    private var inputClosedHeld = false

    /// - Parameter corkAbove: the server's event loop threads: with more connections open than
    ///   that, responses leave corked.
    init(fastPath: any FastPathResponder, connection: HTTPConnectionHandler, counters: ServerCounters, corkAbove: Int) {
        self.fastPath = fastPath
        self.connection = connection
        self.counters = counters
        self.corkAbove = corkAbove
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if !atRequestBoundary {
            guard codecStaysInStep, connection.headsSeen == headsPassedOn, connection.state.mayAnswerOnEventLoop else {
                passOn(buffer, context)
                return
            }
            atRequestBoundary = true
        }
        while buffer.readableBytes > 0 {
            guard context.channel.isWritable, connection.state.mayAnswerOnEventLoop else {
                passOn(buffer, context)
                return
            }
            var length = 0
            if let repeated, let response = repeatedResponse(repeated, buffer, context.channel.allocator, length: &length) {
                buffer.moveReaderIndex(forwardBy: length)
                counters.repeatedAnswers.wrappingAdd(1, ordering: .relaxed)
                write(response, method: repeated.method, context)
                continue
            }
            guard let request = buffer.withUnsafeReadableBytes(WireRequestHead.read),
                  let response = fastPath.immediateResponse(to: request.head, allocator: context.channel.allocator, memo: &connection.fastPathMemo)
            else {
                passOn(buffer, context)
                return
            }
            // The last head's array is reused: a client whose heads never repeat (each with a
            // field of its own) would otherwise allocate and free one per request.
            var bytes = repeated.take()?.bytes ?? []
            if let earlier = response.repeatable {
                bytes.removeAll(keepingCapacity: true)
                buffer.withUnsafeReadableBytes { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<request.length])) }
                repeated = RepeatedHead(bytes: bytes, range: request.firstRange, method: request.method, earlier: earlier)
            }
            buffer.moveReaderIndex(forwardBy: request.length)
            write(response, method: request.method, context)
        }
    }

    /// The responder's answer to the head at the start of `buffer` when it repeats `repeated`
    /// for another range, with the head's length in `length`; nil when it does not, or the
    /// responder wants it read anew. The length goes out through a parameter: an optional
    /// tuple of it and the response was destroyed through `Optional`'s generic value
    /// witnesses once the tuple was taken apart (about 300 instructions of a range hit).
    private func repeatedResponse(
        _ repeated: RepeatedHead, _ buffer: ByteBuffer, _ allocator: ByteBufferAllocator, length: inout Int
    ) -> ImmediateResponse? {
        buffer.withUnsafeReadableBytes { bytes in
            guard let match = repeated.match(bytes) else { return nil }
            length = match.length
            return fastPath.repeatedResponse(
                to: repeated.earlier, range: match.range.map { UnsafeRawBufferPointer(rebasing: bytes[$0]) }, allocator: allocator)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, inFlight > 0 {
            inputClosedHeld = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Only the handlers after this one that were handed bytes in this read hear that it
    /// completed: a read answered wholly here reached none of them, and passing the event
    /// through the codec, the connection handler and the async channel (which finds nothing to
    /// deliver) cost about 1,500 instructions per hit. None of them acts on a completed read it
    /// took no bytes from; the pipeline handler fires its own when it releases reads it held.
    ///
    /// A read answered wholly here also asks for the next bytes from here. The channel's own
    /// read (`autoRead`) would start at the pipeline's tail and pass the async channel's
    /// handler, the connection handler and the codec's, about 1,500 instructions per hit; it
    /// is skipped when a read is already pending (`BaseSocketChannel.readIfNeeded0`). Those
    /// handlers hold a read only while they have a request of their own under way or parts
    /// not yet taken (the pipeline handler while it answers one, the async channel's above its
    /// high watermark), and at a request boundary, with nothing passed on, they have none.
    func channelReadComplete(context: ChannelHandlerContext) {
        flushWritten(context)
        guard passedOnThisRead else {
            if atRequestBoundary, connection.state.mayAnswerOnEventLoop { context.read() }
            return
        }
        passedOnThisRead = false
        context.fireChannelReadComplete()
    }

    /// Sends the responses written since the last flush. With more connections open than
    /// event loops, corked (`TCP_CORK`, as nginx's `tcp_nopush`): a head and its file region
    /// leave in one segment, not a segment each as `TCP_NODELAY` sends them, and the client is
    /// woken once per answer; uncorking pushes what is left at once. Measured with
    /// `benchmarks/serve` (4 KiB ranges, two cores, wrk on the same machine, two runs each):
    /// corked, 16 connections went from 0.62-0.64x nginx's requests per second to 0.66-0.68x,
    /// but one connection from 0.96-0.99x to 0.87-0.89x, its client no longer parsing the head
    /// while the body is sent; so few connections are not corked. From a connection's second
    /// corked answer on, the cork is set on the socket's descriptor (`ConnectionSocket`):
    /// through NIO's options it cost about 3,400 more instructions per corked hit
    /// (`benchmarks/instructions 100` with every hit corked: 39,936 through NIO's options,
    /// 36,534 on the descriptor; not corked, 35,568).
    private func flushWritten(_ context: ChannelHandlerContext) {
        guard unflushed else { return }
        unflushed = false
        guard counters.openConnections.load(ordering: .relaxed) > corkAbove, context.channel.isActive else {
            context.flush()
            settle(context)
            return
        }
        if socket == .notLookedUp { socket = ConnectionSocket(of: context.channel).map(CorkingSocket.descriptor) ?? .options }
        switch socket {
        case let .descriptor(socket):
            socket.flushCorked(context)
        default:
            if socket == .firstAnswer { socket = .notLookedUp }
            let options = channelOptions(context)
            try? options?.options.setOption(Self.cork, value: 1)
            context.flush()
            try? options?.options.setOption(Self.cork, value: 0)
        }
        settle(context)
    }

    /// How this connection's answers are corked: through its socket's descriptor where it is
    /// known to be the channel's (`ConnectionSocket`), else through NIO's options.
    private enum CorkingSocket: Equatable {
        /// No answer corked yet. The first goes through NIO's options: finding the socket
        /// (NIO's description of the channel and three system calls) costs more than NIO's
        /// options for one answer, and a client that opens a connection per request asks once.
        case firstAnswer
        /// One answer corked: the socket is looked up at the next.
        case notLookedUp
        case descriptor(ConnectionSocket)
        case options
    }

    private func channelOptions(_ context: ChannelHandlerContext) -> ChannelOptionsBox? {
        if options == nil { options = context.channel.syncOptions.map(ChannelOptionsBox.init) }
        return options
    }

    /// The channel's options in a class: passing the existential itself around copied and
    /// destroyed it through its generic type's value witnesses, whose metadata is looked up
    /// each time (about 1,000 instructions per hit); a reference is retained and released.
    private final class ChannelOptionsBox {
        let options: any NIOSynchronousChannelOptions
        init(_ options: any NIOSynchronousChannelOptions) { self.options = options }
    }

    /// Finishes the responses written since the last settlement once their last byte has
    /// left: at once when the flush sent them all (a small range's head and region leave
    /// within it), else when an empty write queued behind them completes (writes complete in
    /// order).
    ///
    /// The flush sent them all when the last response ends with a file region and NIO no
    /// longer holds that region's file handle: NIO drops a write's data once it is wholly
    /// written, in order, so nothing before it is left either. Otherwise the channel is asked
    /// for the bytes it still buffers. A promise per response cost about 3,500 instructions of
    /// a 4 KiB range hit (the future's allocation, its callback's, the generic metadata its
    /// creation and deinit look up); asking for the buffered bytes costs about 1,500 (NIO
    /// finds the option by trying each option type its channel classes know); a reference
    /// count costs a few (`benchmarks/instructions`). A write that fails closes the channel
    /// before the flush returns (`BaseSocketChannel.flushNow`), so an open channel that let
    /// go of the data has sent it.
    private func settle(_ context: ChannelHandlerContext) {
        // Taken out first: finishing a response may close the channel, which re-enters this handler.
        guard var (first, more) = takeUnsettled() else { return }
        let open = context.channel.isActive
        let sent = open && lastEndsWithFileRegion && (more.isEmpty ? first.release.holdsHandleAlone() : more[more.count - 1].release.holdsHandleAlone())
        settle(first, more, open: open, sent: sent, context)
    }

    /// `settle`'s second half, apart so that the callback below captures constants: capturing
    /// the first half's variables would box them on the heap for every settlement.
    private func settle(_ first: Unsettled, _ more: [Unsettled], open: Bool, sent: Bool, _ context: ChannelHandlerContext) {
        let buffered: Int? = open && !sent ? (try? channelOptions(context)?.options.getOption(.bufferedWritableBytes)) : nil
        if sent || buffered == 0 || !open {
            let result: Result<Void, any Error> = open ? .success(()) : .failure(ChannelError.ioOnClosedChannel)
            finish(first, result, context)
            for response in more { finish(response, result, context) }
            return
        }
        let left = context.eventLoop.makePromise(of: Void.self)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        left.futureResult.assumeIsolated().whenComplete { result in
            let (handler, context) = loopBound.value
            handler.finish(first, result, context)
            for response in more { handler.finish(response, result, context) }
        }
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(ByteBuffer())), promise: left)
    }

    /// Linux's `TCP_CORK` (tcp(7)), which NIO does not name.
    private static let cork = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: 3))

    /// Hands `buffer` and what follows to the codec.
    private func passOn(_ buffer: ByteBuffer, _ context: ChannelHandlerContext) {
        atRequestBoundary = false
        if codecStaysInStep, let heads = buffer.withUnsafeReadableBytes(WireRequestHead.count) {
            headsPassedOn += heads
        } else {
            codecStaysInStep = false
        }
        // Responses written here go out before the codec's answers to what follows them.
        flushWritten(context)
        passedOnThisRead = true
        context.fireChannelRead(wrapInboundOut(buffer))
    }

    private func write(_ immediate: ImmediateResponse, method: HTTPMethod, _ context: ChannelHandlerContext) {
        connection.wireRequestArrived()
        let planned = immediate.response
        connection.wireResponseEndWritten()
        counters.wireAnswers.wrappingAdd(1, ordering: .relaxed)
        inFlight += 1
        let response = Unsettled(release: planned.releaser, completion: immediate.completion)
        if unsettled == nil { unsettled = response } else { moreUnsettled.append(response) }
        var endsWithFileRegion = false
        Self.forEachWirePart(planned, method: method, allocator: context.channel.allocator) { data in
            if case .fileRegion = data { endsWithFileRegion = true } else { endsWithFileRegion = false }
            context.write(wrapOutboundOut(data), promise: nil)
        }
        lastEndsWithFileRegion = endsWithFileRegion
        unflushed = true
    }
}

extension WireFastPath {
    /// A connection that ends with responses unsettled (written, and the read that wrote them
    /// cut short before its flush) ends them: their descriptors and the responder's
    /// completions must not wait for a flush that never comes. Closing the channel failed
    /// their writes first.
    func channelInactive(context: ChannelHandlerContext) {
        endUnsettled()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        endUnsettled()
        options = nil
    }

    private func endUnsettled() {
        guard let (first, more) = takeUnsettled() else { return }
        end(first)
        for response in more { end(response) }
    }

    /// The unsettled responses, in the order written, taken out of the handler's state.
    private func takeUnsettled() -> (Unsettled, [Unsettled])? {
        guard let first = unsettled.take() else { return nil }
        let more = moreUnsettled
        if !more.isEmpty { moreUnsettled = [] }
        return (first, more)
    }

    /// Lets go of a response's descriptor, runs the responder's completion and tells the
    /// connection its end has been sent.
    private func end(_ response: Unsettled) {
        response.release.release()
        response.completion()
        inFlight -= 1
        connection.wireResponseEndSent()
    }

    /// A response written here and the work that waits for its last byte to leave.
    private struct Unsettled {
        /// The response's descriptor, kept until it has left: the whole response (its head,
        /// body and fields) cost about 1,000 instructions more to copy in and out.
        var release: PlannedResponse.Releaser
        let completion: @Sendable () -> Void
    }

    /// A response written here has left (or failed to): its descriptor is let go, the
    /// responder's completion runs, the connection hears of it.
    private func finish(_ response: Unsettled, _ result: Result<Void, any Error>, _ context: ChannelHandlerContext) {
        end(response)
        if case .failure = result {
            context.close(promise: nil)
        } else if inFlight == 0, inputClosedHeld {
            inputClosedHeld = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }
}

extension WireFastPath {
    /// The bytes and file regions of `planned` on the wire, as NIO's `HTTPResponseEncoder`
    /// frames them for a request of `method`: the head, then the body (none for `HEAD`,
    /// chunked when the head has no `Content-Length`).
    static func wireParts(_ planned: PlannedResponse, method: HTTPMethod, allocator: ByteBufferAllocator) -> [IOData] {
        var out: [IOData] = []
        forEachWirePart(planned, method: method, allocator: allocator) { out.append($0) }
        return out
    }

    /// `wireParts`' parts handed to `body` one by one, in order: a hit writes each as it
    /// comes, without an array of them.
    static func forEachWirePart(_ planned: PlannedResponse, method: HTTPMethod, allocator: ByteBufferAllocator, _ body: (IOData) -> Void) {
        let chunked: Bool
        if let encoded = planned.encodedHead {
            chunked = false
            body(.byteBuffer(encoded))
        } else {
            var buffer = allocator.buffer(capacity: 320)
            chunked = buffer.writeWireResponseHead(planned.head)
            body(.byteBuffer(buffer))
        }
        guard method != .HEAD else { return }
        for data in planned.body {
            // An empty chunk would end the body: NIO sends it unframed (as nothing).
            guard chunked, data.readableBytes > 0 else {
                body(data)
                continue
            }
            var size = allocator.buffer(capacity: 12)
            size.writeString(String(data.readableBytes, radix: 16))
            size.writeStaticString("\r\n")
            body(.byteBuffer(size))
            body(data)
            body(.byteBuffer(allocator.buffer(staticString: "\r\n")))
        }
        if chunked { body(.byteBuffer(allocator.buffer(staticString: "0\r\n\r\n"))) }
    }
}

/// What a server counts across its connections: those open, when one last closed, and the
/// requests the fast path answered, from the wire (`WireFastPath`, and of those the repeated
/// heads) and after the codec (`HTTPConnectionHandler`).
final class ServerCounters: Sendable {
    let openConnections = Atomic<Int>(0)
    let wireAnswers = Atomic<Int>(0)
    let repeatedAnswers = Atomic<Int>(0)
    let codecAnswers = Atomic<Int>(0)
    /// `NIODeadline.now().uptimeNanoseconds` when a connection last closed; 0 before any did.
    let lastClose = Atomic<Int64>(0)

    init() {}
}

extension ByteBuffer {
    /// Writes `head` as NIO's `HTTPResponseEncoder` does in a server pipeline: the status line,
    /// the fields with the framing corrected the same way (no `Content-Length` or
    /// `Transfer-Encoding` on a status without a body; `Transfer-Encoding: chunked` added to an
    /// HTTP/1.1 body without a `Content-Length`), the empty line.
    /// - Returns: whether the body must be sent chunked.
    mutating func writeWireResponseHead(_ head: HTTPResponseHead) -> Bool {
        var headers = head.headers
        var chunked = false
        if !head.status.mayHaveResponseBody {
            if headers.contains(name: "content-length") || headers.contains(name: "transfer-encoding") {
                headers.remove(name: "content-length")
                headers.remove(name: "transfer-encoding")
            }
        } else if headers.contains(name: "content-length") {
            if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
        } else if head.version.major == 1 && head.version.minor >= 1 {
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            chunked = true
        }
        var statusLine = Self.statusLine(version: head.version, status: head.status)
        // One capacity check and one copy per string: `writeString` per piece cost about twice
        // as many instructions as the rest of the head's work together.
        var length = statusLine.utf8.count + 2
        for (name, value) in headers { length += name.utf8.count + value.utf8.count + 4 }
        writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
            // The cursor is passed `inout`, not captured: a local function that captures a
            // mutable variable boxes it, and every access to the box is checked for exclusivity
            // at run time (about 4k instructions per hit).
            var at = 0
            Self.copy(&statusLine, to: out, at: &at)
            for (name, value) in headers {
                var name = name
                var value = value
                Self.copyField(&name, &value, to: out, at: &at)
            }
            Self.copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: out, at: &at)
            return at
        }
        return chunked
    }

    /// Copies `text`'s UTF-8 to `out` at `at`, moving `at` past it; `out` has room.
    package static func copy(_ text: inout String, to out: UnsafeMutableRawBufferPointer, at: inout Int) {
        text.withUTF8 { bytes in
            guard bytes.count > 0 else { return }
            (out.baseAddress! + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            at += bytes.count
        }
    }

    /// Copies a field line, `name: value` and CRLF, to `out` at `at`, moving `at` past it;
    /// `out` has room (the two strings' UTF-8 and 4 bytes).
    package static func copyField(_ name: inout String, _ value: inout String, to out: UnsafeMutableRawBufferPointer, at: inout Int) {
        copy(&name, to: out, at: &at)
        copy(UInt8(ascii: ":"), UInt8(ascii: " "), to: out, at: &at)
        copy(&value, to: out, at: &at)
        copy(UInt8(ascii: "\r"), UInt8(ascii: "\n"), to: out, at: &at)
    }

    /// Copies two bytes to `out` at `at`, moving `at` past them; `out` has room.
    package static func copy(_ a: UInt8, _ b: UInt8, to out: UnsafeMutableRawBufferPointer, at: inout Int) {
        out[at] = a
        out[at + 1] = b
        at += 2
    }

    /// The status line (with its CRLF) as NIO's `HTTPResponseEncoder` writes it, the answers
    /// of hits written out.
    package static func statusLine(version: HTTPVersion, status: HTTPResponseStatus) -> String {
        if version == .http1_1 {
            switch status.code {
            case 200: return "HTTP/1.1 200 OK\r\n"
            case 206: return "HTTP/1.1 206 Partial Content\r\n"
            case 304: return "HTTP/1.1 304 Not Modified\r\n"
            case 416: return "HTTP/1.1 416 Range Not Satisfiable\r\n"
            default: break
            }
        }
        return "HTTP/\(version.major).\(version.minor) \(status.code) \(status.reasonPhrase)\r\n"
    }
}
