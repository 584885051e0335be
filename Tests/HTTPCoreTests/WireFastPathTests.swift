import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import HTTPCore

/// `WireFastPath` on an `EmbeddedChannel` in front of the codec it bypasses: the bytes it
/// writes are NIO's encoder's, and it answers only where the codec would have answered the same
/// request the same way and in the same order.
@Suite struct WireFastPathTests {
    /// Answers `/hit…` with its target as the body; anything else is left to the serve loop.
    struct Hits: FastPathResponder {
        func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse? {
            guard head.uri.hasPrefix("/hit") else { return nil }
            let body = allocator.buffer(string: "hit \(head.uri)")
            let planned = PlannedResponse(
                head: HTTPResponseHead(version: .http1_1, status: .partialContent, headers: ["content-length": "\(body.readableBytes)", "etag": "\"e\""]),
                body: head.method == .HEAD ? [] : [.byteBuffer(body)], handle: nil, cacheResult: "hit")
            return ImmediateResponse(planned) {}
        }
    }

    /// Answers `/stream…` with its target and range as the body, and such a request again for
    /// another range from what it kept (while `repeats` is true), counting both.
    final class Streams: FastPathResponder {
        final class Kept {
            let uri: String
            init(uri: String) { self.uri = uri }
        }
        let calls = Mutex((read: 0, repeated: 0, repeats: true))

        func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse? {
            guard head.uri.hasPrefix("/stream") else { return nil }
            calls.withLock { $0.read += 1 }
            return Self.response(uri: head.uri, range: head.headers.first(name: "range"), method: head.method, allocator)
        }

        func repeatedResponse(to earlier: AnyObject, range: UnsafeRawBufferPointer?, allocator: ByteBufferAllocator) -> ImmediateResponse? {
            guard calls.withLock({ $0.repeats }), let kept = earlier as? Kept else { return nil }
            calls.withLock { $0.repeated += 1 }
            return Self.response(uri: kept.uri, range: range.map { String(decoding: $0, as: UTF8.self) }, method: nil, allocator)
        }

        static func response(uri: String, range: String?, method: HTTPMethod?, _ allocator: ByteBufferAllocator) -> ImmediateResponse {
            let body = allocator.buffer(string: "\(uri) \(range ?? "-")")
            let planned = PlannedResponse(
                head: HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "\(body.readableBytes)"]),
                body: method == .HEAD ? [] : [.byteBuffer(body)], handle: nil, cacheResult: "hit")
            return ImmediateResponse(planned, repeatable: Kept(uri: uri)) {}
        }
    }

    /// Keeps the request parts that reach the end of the pipeline (the serve loop's share).
    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var heads: [String] = []
        /// Completed reads that reached the end of the pipeline.
        var readsCompleted = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case let .head(head) = unwrapInboundIn(data) { heads.append(head.uri) }
        }
        func channelReadComplete(context: ChannelHandlerContext) {
            readsCompleted += 1
            context.fireChannelReadComplete()
        }
    }

    /// Counts the reads that pass it on their way to the socket.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    struct Connection {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        let counters = ServerCounters()
        /// Reads that reached the socket's end of the pipeline, and those that started at its tail.
        let socketReads = ReadCounter()
        let tailReads = ReadCounter()
        var answered: Int { counters.wireAnswers.load(ordering: .relaxed) }

        init(_ fastPath: any FastPathResponder = Hits()) throws {
            let connection = HTTPConnectionHandler(state: HTTPConnectionState(), headTimeout: .seconds(60), fastPath: fastPath)
            try channel.pipeline.syncOperations.addHandler(socketReads)
            try channel.pipeline.syncOperations.addHandler(WireFastPath(fastPath: fastPath, connection: connection, counters: counters, corkAbove: 1))
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
            try channel.pipeline.syncOperations.addHandler(connection)
            try channel.pipeline.syncOperations.addHandler(tailReads)
            try channel.pipeline.syncOperations.addHandler(recorder)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(channel.allocator.buffer(string: text))
        }

        /// What went out on the wire since the last call.
        func written() throws -> String {
            var text = ""
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case let .byteBuffer(buffer) = data else { Issue.record("a file region in a test without files"); continue }
                text += String(buffer: buffer)
            }
            return text
        }

        /// The serve loop's answer to a request the codec delivered.
        func answer(_ body: String) throws {
            var buffer = channel.allocator.buffer(string: body)
            try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "\(buffer.readableBytes)"])))
            try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(buffer.readSlice(length: buffer.readableBytes)!)))
            try channel.writeOutbound(HTTPServerResponsePart.end(nil))
            channel.embeddedEventLoop.run()
        }
    }

    static func get(_ target: String, method: String = "GET") -> String { "\(method) \(target) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: t\r\n\r\n" }
    static func hit(_ target: String) -> String { "HTTP/1.1 206 Partial Content\r\ncontent-length: \(4 + target.utf8.count)\r\netag: \"e\"\r\n\r\nhit \(target)" }

    @Test func hitsAreAnsweredFromTheirBytesAndTheRestKeepsItsOrderThroughTheCodec() throws {
        let connection = try Connection()
        try connection.send(Self.get("/hit1"))
        #expect(try connection.written() == Self.hit("/hit1"))
        #expect(connection.answered == 1 && connection.recorder.heads.isEmpty)

        // A request the fast path leaves, pipelined with a hit: both go to the codec, whose
        // pipeline handler holds the hit until the first is answered.
        try connection.send(Self.get("/miss") + Self.get("/hit2"))
        #expect(try connection.written() == "")
        #expect(connection.recorder.heads == ["/miss"] && connection.answered == 1)
        try connection.answer("miss")
        // The codec's own fast path answers the held hit: the same bytes, after the miss's.
        #expect(try connection.written() == "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nmiss" + Self.hit("/hit2"))
        #expect(connection.recorder.heads == ["/miss"] && connection.answered == 1)

        // The codec holds nothing now and has seen every head it was given: back on the wire.
        try connection.send(Self.get("/hit3") + Self.get("/hit4", method: "HEAD"))
        #expect(try connection.written() == Self.hit("/hit3") + "HTTP/1.1 206 Partial Content\r\ncontent-length: 9\r\netag: \"e\"\r\n\r\n")
        #expect(connection.answered == 3)
    }

    /// The handlers after the wire path hear that a read completed only when it handed them
    /// bytes: NIO's async channel delivers what it was handed only then, so a request passed
    /// on without it would wait for ever.
    @Test func aCompletedReadReachesTheCodecOnlyWhenItHandedTheCodecBytes() throws {
        let connection = try Connection()
        try connection.send(Self.get("/hit1") + Self.get("/hit2"))
        #expect(try connection.written() == Self.hit("/hit1") + Self.hit("/hit2"))
        #expect(connection.recorder.readsCompleted == 0)
        // A hit and, in the same read, a request for the serve loop.
        try connection.send(Self.get("/hit3") + Self.get("/miss"))
        #expect(try connection.written() == Self.hit("/hit3"))
        #expect(connection.recorder.heads == ["/miss"] && connection.recorder.readsCompleted == 1)
        try connection.answer("miss")
        _ = try connection.written()
        try connection.send(Self.get("/hit4"))
        #expect(try connection.written() == Self.hit("/hit4"))
        #expect(connection.recorder.readsCompleted == 1, "a read answered wholly on the wire is not passed on")
    }

    /// A read answered wholly on the wire asks for the next bytes from there, past none of the
    /// codec's handlers (the channel then skips its own read from the pipeline's tail); a read
    /// that handed the codec bytes leaves the next read to the channel, through the handlers
    /// that may hold it (`EmbeddedChannel` makes none of its own).
    @Test func aReadAnsweredWhollyOnTheWireAsksForTheNextBytesFromThere() throws {
        let connection = try Connection()
        func reads(_ step: () throws -> Void) rethrows -> (socket: Int, tail: Int) {
            let before = (connection.socketReads.reads, connection.tailReads.reads)
            try step()
            return (connection.socketReads.reads - before.0, connection.tailReads.reads - before.1)
        }
        #expect(try reads { try connection.send(Self.get("/hit1") + Self.get("/hit2")) } == (1, 0))
        #expect(try reads { try connection.send(Self.get("/hit3") + Self.get("/miss")) } == (0, 0))
        try connection.answer("miss")
        _ = try connection.written()
        #expect(try reads { try connection.send(Self.get("/hit4")) } == (1, 0))
        #expect(try connection.written() == Self.hit("/hit4"))
    }

    /// A request that repeats the connection's last one but for its range is answered from
    /// what the responder kept, with the new range; any other difference, or a responder that
    /// no longer stands by what it kept, has the head read anew, still on the wire.
    @Test func aRepeatedHeadIsAnsweredFromWhatTheResponderKept() throws {
        let streams = Streams()
        let connection = try Connection(streams)
        func get(_ range: String, token: String = "t", method: String = "GET") -> String {
            "\(method) /stream/a HTTP/1.1\r\nHost: depot\r\nRange: \(range)\r\nX-Auth-Token: \(token)\r\n\r\n"
        }
        func ok(_ body: String) -> String { "HTTP/1.1 200 OK\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)" }
        try connection.send(get("bytes=0-9"))
        #expect(try connection.written() == ok("/stream/a bytes=0-9"))
        #expect(streams.calls.withLock { ($0.read, $0.repeated) } == (1, 0))
        // Two more in one read, the second with an empty value.
        try connection.send(get("bytes=10-19") + get(""))
        #expect(try connection.written() == ok("/stream/a bytes=10-19") + ok("/stream/a "))
        #expect(streams.calls.withLock { ($0.read, $0.repeated) } == (1, 2))
        // Another token: read anew, and kept in its place.
        try connection.send(get("bytes=20-29", token: "u") + get("bytes=30-39", token: "u"))
        #expect(try connection.written() == ok("/stream/a bytes=20-29") + ok("/stream/a bytes=30-39"))
        #expect(streams.calls.withLock { ($0.read, $0.repeated) } == (2, 3))
        // A HEAD is not the GET it otherwise repeats.
        try connection.send(get("bytes=0-9", token: "u", method: "HEAD"))
        #expect(try connection.written() == "HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\n")
        #expect(streams.calls.withLock { ($0.read, $0.repeated) } == (3, 3))
        // The responder no longer stands by it: read and answered anew on the wire.
        streams.calls.withLock { $0.repeats = false }
        try connection.send(get("bytes=40-49", token: "u", method: "HEAD"))
        #expect(try connection.written() == "HTTP/1.1 200 OK\r\ncontent-length: 21\r\n\r\n")
        #expect(streams.calls.withLock { ($0.read, $0.repeated) } == (4, 3))
        #expect(connection.answered == 7 && connection.recorder.heads.isEmpty)
    }

    /// Answers `/hit…` as `Hits` does, counting the answers whose completion has run.
    final class CountedHits: FastPathResponder {
        let completed = Atomic<Int>(0)

        func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse? {
            guard let answer = Hits().immediateResponse(to: head, allocator: allocator, memo: &memo) else { return nil }
            return ImmediateResponse(answer.response) { [self] in _ = completed.wrappingAdd(1, ordering: .relaxed) }
        }
    }

    /// A hit's completion (which lets go of its blob's read and descriptor, and logs it) runs
    /// once its bytes have left: right after the flush that sent them. A connection that closes
    /// between a hit's write and its flush (the read that wrote it cut short) still runs it.
    @Test func aHitsCompletionRunsOnceItsBytesLeftOrTheConnectionEnded() throws {
        let hits = CountedHits()
        let connection = try Connection(hits)
        try connection.send(Self.get("/hit1") + Self.get("/hit2"))
        #expect(try connection.written() == Self.hit("/hit1") + Self.hit("/hit2"))
        #expect(hits.completed.load(ordering: .relaxed) == 2)

        // Written, not flushed: the read has not completed.
        try connection.channel.pipeline.syncOperations.fireChannelRead(NIOAny(connection.channel.allocator.buffer(string: Self.get("/hit3"))))
        #expect(connection.answered == 3)
        #expect(hits.completed.load(ordering: .relaxed) == 2, "nothing has left yet")
        _ = try connection.channel.close().wait()
        #expect(hits.completed.load(ordering: .relaxed) == 3)
    }

    @Test func aConnectionThatSentAnIncompleteHeadStaysWithTheCodec() throws {
        let connection = try Connection()
        let head = Self.get("/hit1")
        let split = head.utf8.index(head.utf8.startIndex, offsetBy: 20)
        try connection.send(String(head[..<split]))
        try connection.send(String(head[split...]))
        try connection.send(Self.get("/hit2"))
        #expect(try connection.written() == Self.hit("/hit1") + Self.hit("/hit2"))
        #expect(connection.answered == 0, "the codec's fast path answered both")
    }

    @Test func aRequestWaitingOnTheServeLoopKeepsLaterHitsBehindIt() throws {
        let connection = try Connection()
        try connection.send(Self.get("/miss"))
        // Sent before the miss is answered: answering it now would overtake the miss.
        try connection.send(Self.get("/hit1"))
        #expect(try connection.written() == "")
        try connection.answer("miss")
        #expect(try connection.written() == "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nmiss" + Self.hit("/hit1"))
        #expect(connection.answered == 0)
    }

    /// The head and body framing against `HTTPResponseEncoder` itself, for every status and
    /// the framing fields a head may carry.
    @Test func theWireBytesAreNIOsEncodersBytes() throws {
        let fieldSets: [HTTPHeaders] = [
            ["content-length": "5"], ["content-length": "5", "transfer-encoding": "chunked"], ["transfer-encoding": "chunked"], [:],
            ["x-depot-cache": "hit", "etag": "\"a\""], ["Content-Length": "5", "Content-Type": "application/octet-stream"],
        ]
        let bodies: [[String]] = [[], ["hello"], ["he", "", "llo"]]
        var compared = 0
        for code in 100...599 {
            for fields in fieldSets {
                for body in bodies {
                    let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code), headers: fields)
                    let allocator = ByteBufferAllocator()
                    let planned = PlannedResponse(head: head, body: body.map { .byteBuffer(allocator.buffer(string: $0)) }, handle: nil, cacheResult: nil)
                    let wire = WireFastPath.wireParts(planned, method: .GET, allocator: allocator).map { data -> String in
                        guard case let .byteBuffer(buffer) = data else { return "<file>" }
                        return String(buffer: buffer)
                    }.joined()
                    let channel = EmbeddedChannel(handler: HTTPResponseEncoder())
                    for part in planned.parts { try channel.writeOutbound(part) }
                    var encoded = ""
                    while let data = try channel.readOutbound(as: IOData.self) {
                        if case let .byteBuffer(buffer) = data { encoded += String(buffer: buffer) }
                    }
                    _ = try channel.finish()
                    #expect(wire == encoded, "\(code) \(fields) \(body)")
                    compared += 1
                }
            }
        }
        #expect(compared == 500 * 6 * 3)
    }
}
