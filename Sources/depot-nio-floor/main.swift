// depot-nio-floor: the least a range hit can cost on Depot's engine (SwiftNIO), for benchmarks.
//
//   depot-nio-floor --file PATH [--listen HOST:PORT] [--threads N]
//
// Serves one file over HTTP/1.1 keep-alive: a request with `Range: bytes=FIRST-LAST` gets a 206
// with that range, sent with sendfile (a `FileRegion`) behind a head written from a template, as
// a Depot hit's bytes go out; one without gets the whole file (200); any other `Range` a 416.
// Every request is answered as a GET, and request bodies are not supported. Nothing else: no
// authorization, catalog, budget, access log or metrics. The event loops (one per core), the
// channel options that shape a hit (TCP_NODELAY, reads per wake-up, write-buffer marks) and the
// flush (corked with more connections open than event loops) are those of `HTTPServer` and
// `WireFastPath`, and the bytes leave through the same NIO write path: `benchmarks/instructions`
// and `benchmarks/serve FLOOR=1` measure it beside Depot and nginx, to tell how much of a hit's
// cost is the engine and how much is Depot's work on top. Not a server to deploy.
//
// Prints "depot-nio-floor listening on http://HOST:PORT" once bound (port 0 picks one).
import HTTPCore
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a request's head ends and which range it asks for.
struct FloorRequest: Equatable {
    /// Bytes of the head, through its blank line.
    var headLength: Int
    /// The inclusive byte range asked for (`Range: bytes=FIRST-LAST`), nil for the whole file.
    var range: ClosedRange<UInt64>?
    /// Whether a `Range` field was present but is not one `FIRST-LAST` this server answers.
    var unsupportedRange: Bool

    /// Reads the head at the start of `bytes`, nil until its blank line has arrived.
    ///
    /// One pass over the head, line by line: a line is looked at only when it may be the
    /// `Range` field (it starts with `r` or `R`). Field names are case-insensitive (RFC 9110,
    /// section 5.1).
    static func read(_ bytes: UnsafeRawBufferPointer) -> FloorRequest? {
        var request = FloorRequest(headLength: 0, range: nil, unsupportedRange: false)
        guard let base = bytes.baseAddress else { return nil }
        var rangeLine: Int?
        var lineStart = 0
        // memchr finds each line's end (libc's, vectorised): a byte loop cost more than the rest
        // of the answer.
        while lineStart < bytes.count, let newline = memchr(base + lineStart, 0x0A, bytes.count - lineStart) {
            let at = base.distance(to: UnsafeRawPointer(newline))
            // A line ends at `at`; an empty one (CR LF alone) ends the head.
            if at == lineStart + 1, bytes[lineStart] == 0x0D {
                request.headLength = at + 1
                break
            }
            lineStart = at + 1
            if rangeLine == nil, lineStart + 6 <= bytes.count, bytes[lineStart] | 0x20 == 0x72, bytes[lineStart + 1] | 0x20 == 0x61,
               bytes[lineStart + 2] | 0x20 == 0x6E, bytes[lineStart + 3] | 0x20 == 0x67, bytes[lineStart + 4] | 0x20 == 0x65,
               bytes[lineStart + 5] == 0x3A {
                rangeLine = lineStart + 6
            }
        }
        guard request.headLength > 0 else { return nil }
        if let rangeLine {
            request.range = parseByteRange(bytes, from: rangeLine, to: request.headLength - 2)
            request.unsupportedRange = request.range == nil
        }
        return request
    }

    /// `bytes=FIRST-LAST`, with optional whitespace around it, up to the end of its line.
    private static func parseByteRange(_ bytes: UnsafeRawBufferPointer, from start: Int, to limit: Int) -> ClosedRange<UInt64>? {
        var lineEnd = start
        while lineEnd < limit, bytes[lineEnd] != 0x0D { lineEnd += 1 }
        var at = start
        func skipWhitespace() { while at < lineEnd, bytes[at] == 0x20 || bytes[at] == 0x09 { at += 1 } }
        func number() -> UInt64? {
            var value: UInt64 = 0
            var digits = 0
            while at < lineEnd, bytes[at] >= 0x30, bytes[at] <= 0x39, digits < 19 {
                value = value * 10 + UInt64(bytes[at] - 0x30)
                at += 1
                digits += 1
            }
            return digits > 0 ? value : nil
        }
        skipWhitespace()
        for expected in "bytes=".utf8 {
            guard at < lineEnd, bytes[at] == expected else { return nil }
            at += 1
        }
        guard let first = number(), at < lineEnd, bytes[at] == 0x2D else { return nil }
        at += 1
        guard let last = number(), last >= first else { return nil }
        skipWhitespace()
        return at == lineEnd ? first...last : nil
    }
}

/// Answers every request on one connection from one open file.
final class FloorHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData

    private let file: NIOFileHandle
    private let size: UInt64
    private let connections: OpenConnections
    private let corkAbove: Int
    private var pending: ByteBuffer?
    private var unflushed = false
    /// The connection's socket, looked up at its first corked answer (the benchmarks' clients
    /// keep their connections). Without it, answers leave uncorked.
    private var socket: ConnectionSocket?
    private var socketLookedUp = false

    /// - Parameter corkAbove: with more connections open than this, answers leave corked, as
    ///   `WireFastPath.flushWritten` sends Depot's.
    init(file: NIOFileHandle, size: UInt64, connections: OpenConnections, corkAbove: Int) {
        self.file = file
        self.size = size
        self.connections = connections
        self.corkAbove = corkAbove
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var held = pending {
            // Taken out first, so the append does not copy the held bytes (copy on write).
            pending = nil
            held.writeBuffer(&buffer)
            buffer = held
        }
        while let request = buffer.withUnsafeReadableBytes(FloorRequest.read) {
            buffer.moveReaderIndex(forwardBy: request.headLength)
            answer(request, context)
        }
        if buffer.readableBytes > 0 {
            guard buffer.readableBytes < 64 << 10 else {
                context.close(promise: nil)
                return
            }
            pending = buffer
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard unflushed else { return }
        unflushed = false
        // TCP_CORK on the socket's descriptor, as Depot's wire fast path: a head and its file
        // region then leave in one segment.
        guard connections.open.load(ordering: .relaxed) > corkAbove, context.channel.isActive else {
            context.flush()
            return
        }
        if !socketLookedUp {
            socketLookedUp = true
            socket = ConnectionSocket(of: context.channel)
        }
        guard let socket else {
            context.flush()
            return
        }
        socket.flushCorked(context)
    }

    private func answer(_ request: FloorRequest, _ context: ChannelHandlerContext) {
        var head = context.channel.allocator.buffer(capacity: 160)
        let body: ClosedRange<UInt64>?
        if let range = request.range, range.lowerBound < size {
            let last = min(range.upperBound, size - 1)
            head.writeStaticString("HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: ")
            head.writeDecimal(last - range.lowerBound + 1)
            head.writeStaticString("\r\nContent-Range: bytes ")
            head.writeDecimal(range.lowerBound)
            head.writeInteger(UInt8(ascii: "-"))
            head.writeDecimal(last)
            head.writeInteger(UInt8(ascii: "/"))
            head.writeDecimal(size)
            head.writeStaticString("\r\n\r\n")
            body = range.lowerBound...last
        } else if request.range != nil || request.unsupportedRange {
            head.writeStaticString("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nContent-Range: bytes */")
            head.writeDecimal(size)
            head.writeStaticString("\r\n\r\n")
            body = nil
        } else {
            head.writeStaticString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: ")
            head.writeDecimal(size)
            head.writeStaticString("\r\n\r\n")
            body = size > 0 ? 0...(size - 1) : nil
        }
        context.write(wrapOutboundOut(.byteBuffer(head)), promise: nil)
        if let body {
            let region = FileRegion(fileHandle: file, readerIndex: Int(body.lowerBound), endIndex: Int(body.upperBound) + 1)
            context.write(wrapOutboundOut(.fileRegion(region)), promise: nil)
        }
        unflushed = true
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        try? file.close()
    }
}

extension ByteBuffer {
    /// Writes `value` in decimal ASCII digits, without making a `String`.
    mutating func writeDecimal(_ value: UInt64) {
        var remaining = value
        var count = 1
        while remaining >= 10 {
            remaining /= 10
            count += 1
        }
        remaining = value
        writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in
            for index in stride(from: count - 1, through: 0, by: -1) {
                out[index] = UInt8(truncatingIfNeeded: remaining % 10) + 0x30
                remaining /= 10
            }
            return count
        }
    }
}

/// Writes `line` and a newline to a file descriptor, unbuffered (the benchmarks wait for the
/// listening line in a file).
func say(_ line: String, to descriptor: Int32) {
    let text = Array((line + "\n").utf8)
    _ = text.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
}

/// Connections open now, across the event loops.
final class OpenConnections: Sendable {
    let open = Atomic<Int>(0)
}

func usage(_ message: String) -> Never {
    say("depot-nio-floor: \(message)\nusage: depot-nio-floor --file PATH [--listen HOST:PORT] [--threads N]", to: 2)
    exit(2)
}

var path: String?
var host = "127.0.0.1"
var port = 0
var threads = System.coreCount
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { usage("\(flag) needs a value") }
    switch flag {
    case "--file": path = value
    case "--listen":
        guard let colon = value.lastIndex(of: ":"), let number = Int(value[value.index(after: colon)...]) else { usage("--listen takes HOST:PORT") }
        host = String(value[..<colon])
        port = number
    case "--threads":
        guard let number = Int(value), number > 0 else { usage("--threads takes a positive number") }
        threads = number
    default: usage("unknown option \(flag)")
    }
}
guard let path else { usage("--file is required") }
var status = stat()
let probe = open(path, O_RDONLY)
guard probe >= 0, fstat(probe, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { usage("\(path) is not a readable file") }
close(probe)
let size = UInt64(status.st_size)
let connections = OpenConnections()
let eventLoops = threads

let group = MultiThreadedEventLoopGroup(numberOfThreads: eventLoops)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(ChannelOptions.backlog, value: 512)
    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
    .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 4)
    .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 2 << 20, high: 4 << 20))
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            connections.open.wrappingAdd(1, ordering: .relaxed)
            channel.closeFuture.whenComplete { _ in connections.open.wrappingSubtract(1, ordering: .relaxed) }
            let file = try NIOFileHandle(_deprecatedPath: path)
            try channel.pipeline.syncOperations.addHandler(FloorHandler(file: file, size: size, connections: connections, corkAbove: eventLoops))
        }
    }
let server: any Channel
do {
    server = try bootstrap.bind(host: host, port: port).wait()
} catch {
    usage("could not listen on \(host):\(port): \(error)")
}
guard let address = server.localAddress, let bound = address.port else { usage("could not bind \(host):\(port)") }
say("depot-nio-floor listening on http://\(address.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? host):\(bound)", to: 1)
try server.closeFuture.wait()
