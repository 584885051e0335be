import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Why the server could not start.
public enum HTTPServerError: Error, CustomStringConvertible {
    case cannotListen(host: String, port: Int, errno: Int32)

    public var description: String {
        switch self {
        case let .cannotListen(host, port, code) where code == EADDRINUSE:
            "\(host):\(port) is already in use; stop the other process or pass --listen HOST:PORT"
        case let .cannotListen(host, port, code) where code == EACCES:
            "not allowed to listen on \(host):\(port); use a port above 1023"
        case let .cannotListen(host, port, code):
            "cannot listen on \(host):\(port): \(String(cString: strerror(code)))"
        }
    }
}

/// What one server lets its clients use, so that many or misbehaving clients cannot take it down.
public struct ServerLimits: Sendable, Equatable {
    /// Connections open at once; one more is answered 503 and closed at once.
    public var maximumConnections = 4096
    /// A connection must deliver a complete request head within this long of opening, or of
    /// the previous response's last byte: slowloris clients and idle keep-alive connections
    /// are closed then.
    public var headerTimeout = TimeAmount.seconds(60)
    /// A connection with no progress either way for this long (no byte received, none of
    /// Depot's acknowledged) is closed: a stalled body, a client that stopped reading, an idle
    /// keep-alive connection. A client waiting on Depot's answer is not idle (a miss on a slow
    /// backend). Checked a few times per timeout (`IdleWatchStateMachine`).
    public var idleTimeout = TimeAmount.seconds(120)
    /// The longest a client that sent its whole request may wait on Depot with nothing of its
    /// answer to read (the idle timeout if that is longer): a safety net for an answer that is
    /// stuck, not for a slow backend, whose transfer the backend client ends first.
    public var responseWaitTimeout = TimeAmount.seconds(300)

    public init() {}
}

/// A SwiftNIO HTTP/1.1 server: one task per connection, requests handled in order.
///
/// Responses are written with `writeAndFlush` and awaited, so a slow client slows its own
/// transfer instead of making the server buffer it.
public final class HTTPServer: Sendable {
    public let host: String
    public let requestedPort: Int
    public let limits: ServerLimits
    let handler: any RequestHandler
    let fastPath: (any FastPathResponder)?
    /// Set when the listener speaks TLS.
    let tls: NIOSSLContext?
    /// Reads blob bytes for hits over TLS, where sendfile cannot encrypt (nil without TLS).
    let fileReads: NonBlockingFileIO?
    private let fileReadThreads: NIOThreadPool?
    let group: MultiThreadedEventLoopGroup
    let logger: Logger
    private let listening = Mutex<Channel?>(nil)
    private let open = Mutex<[ObjectIdentifier: Channel]>([:])
    private let boundPort = Mutex<Int?>(nil)
    /// Accepted connections not yet closed (refused ones included), and the requests the wire
    /// fast path answered.
    private let counters = ServerCounters()
    private let threads: Int

    /// - Parameters:
    ///   - fastPath: answers what it can on the event loop (cache hits); by default the handler
    ///     itself when it can. Not used with TLS: its zero-copy file regions cannot be encrypted.
    ///   - tls: the listener's certificate and key; nil serves plain HTTP.
    public init(
        host: String, port: Int, handler: any RequestHandler, fastPath: (any FastPathResponder)? = nil, tls: NIOSSLContext? = nil,
        limits: ServerLimits = .init(), threads: Int = System.coreCount, logger: Logger = Logger(label: "depot.http")
    ) {
        self.host = host
        self.requestedPort = port
        self.limits = limits
        self.handler = handler
        self.tls = tls
        self.fastPath = tls == nil ? fastPath ?? (handler as? any FastPathResponder) : nil
        if tls != nil {
            let threads = NIOThreadPool(numberOfThreads: max(2, System.coreCount))
            threads.start()
            fileReadThreads = threads
            fileReads = NonBlockingFileIO(threadPool: threads)
        } else {
            fileReadThreads = nil
            fileReads = nil
        }
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.threads = threads
        self.logger = logger
    }

    /// `https` with TLS, else `http`.
    public var scheme: String { tls == nil ? "http" : "https" }

    /// Connections open now.
    public var openConnections: Int { counters.openConnections.load(ordering: .relaxed) }

    /// When a connection last closed, on the event loops' clock (`NIODeadline.now()`, the
    /// monotonic clock); nil before any did. Tests time Depot's closes with it, so a stall of
    /// their own process is not counted as Depot's.
    public var lastConnectionClosedAt: NIODeadline? {
        let nanoseconds = counters.lastClose.load(ordering: .relaxed)
        return nanoseconds == 0 ? nil : .uptimeNanoseconds(UInt64(nanoseconds))
    }

    /// Requests answered from their bytes before the HTTP codec (`WireFastPath`), since start.
    public var wireFastPathAnswers: Int { counters.wireAnswers.load(ordering: .relaxed) }
    /// Of those, the requests answered as the repetition of their connection's last one but
    /// for the range (`RepeatedHead`).
    public var repeatedHeadAnswers: Int { counters.repeatedAnswers.load(ordering: .relaxed) }

    /// Requests the codec read that the fast path answered on the event loop, since start.
    public var codecFastPathAnswers: Int { counters.codecAnswers.load(ordering: .relaxed) }

    /// The port the server listens on, once `run` has bound it.
    public var port: Int? { boundPort.withLock { $0 } }

    /// Binds and serves until `shutdown` or cancellation; then waits for open connections.
    public func run(onBound: @Sendable (Int) -> Void = { _ in }) async throws {
        let server: NIOAsyncChannel<Connection, Never>
        do {
            server = try await bind()
        } catch let error as IOError {
            throw HTTPServerError.cannotListen(host: host, port: requestedPort, errno: error.errnoCode)
        }
        let port = server.channel.localAddress?.port ?? requestedPort
        boundPort.withLock { $0 = port }
        listening.withLock { $0 = server.channel }
        logger.info("listening", metadata: ["address": "\(host):\(port)"])
        onBound(port)
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    guard case let .accepted(state, channel) = connection else { continue }
                    group.addTask { await self.serve(channel, state: state) }
                }
            }
        }
    }

    /// A new connection: served, or refused because too many are open.
    enum Connection: Sendable {
        case accepted(HTTPConnectionState, NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>)
        case refused
    }

    private func bind() async throws -> NIOAsyncChannel<Connection, Never> {
        let fastPath = self.fastPath
        let tls = self.tls
        let limits = self.limits
        let logger = self.logger
        let counters = self.counters
        let threads = self.threads
        return try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 512)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            // TCP_NODELAY is an IPPROTO_TCP option: at SOL_SOCKET the same number is SO_DEBUG,
            // which only root may set (an ordinary user got EACCES on every connection).
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 4)
            // Writability only paces the wire fast path (pipelined hits beyond the high mark go to
            // the codec); every other response awaits each write. With NIO's default (64 KiB), a
            // 64 KiB range made the channel unwritable and writable again, two events through
            // the whole pipeline, on every hit. Pending file regions hold no memory; 4 MiB is
            // two of the largest region a hit writes (`HitResponse.regionBytes`).
            .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 2 << 20, high: 4 << 20))
            // A client that ends its side mid-body (a half-close) still hears why its request
            // failed: without this, the end of its input would close the whole connection.
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(host: host, port: requestedPort) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let open = counters.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
                    channel.closeFuture.whenComplete { _ in
                        counters.lastClose.store(Int64(NIODeadline.now().uptimeNanoseconds), ordering: .relaxed)
                        counters.openConnections.wrappingSubtract(1, ordering: .relaxed)
                    }
                    if open > limits.maximumConnections {
                        logger.warning("connection refused: too many open", metadata: ["open": "\(open - 1)", "limit": "\(limits.maximumConnections)"])
                        try channel.pipeline.syncOperations.addHandler(ConnectionRefuser(limit: limits.maximumConnections))
                        return .refused
                    }
                    let state = HTTPConnectionState()
                    let connection = HTTPConnectionHandler(state: state, headTimeout: limits.headerTimeout, fastPath: fastPath, counters: counters)
                    try channel.pipeline.syncOperations.addHandler(IdleConnectionWatch(
                        timeout: limits.idleTimeout, serverWaitLimit: limits.responseWaitTimeout, awaitsResponse: { state.awaitsResponse }))
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    // Hits read from the bytes, before the codec (never with TLS: no fast path).
                    if let fastPath {
                        try channel.pipeline.syncOperations.addHandler(WireFastPath(fastPath: fastPath, connection: connection, counters: counters, corkAbove: threads))
                    }
                    // Parse errors are answered in `serve`, which knows whether a response is
                    // already under way (NIO's own error handler would write a second one).
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
                    try channel.pipeline.syncOperations.addHandler(AbsoluteFormTarget())
                    try channel.pipeline.syncOperations.addHandler(connection)
                    return .accepted(state, try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel))
                }
            }
    }

    /// Stops accepting connections; `run` returns once the open ones are done.
    public func shutdown() {
        listening.withLock { $0 }?.close(promise: nil)
    }

    /// Closes every open connection now (after the graceful deadline).
    public func closeAllConnections() {
        for channel in open.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }

    /// Frees the event loops; call after `run` returned.
    public func close() async {
        try? await group.shutdownGracefully()
        try? await fileReadThreads?.shutdownGracefully()
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, state: HTTPConnectionState) async {
        let id = ObjectIdentifier(connection.channel)
        open.withLock { $0[id] = connection.channel }
        defer { open.withLock { _ = $0.removeValue(forKey: id) } }
        do {
            try await connection.executeThenClose { inbound, _ in
                let parts = InboundParts(inbound.makeAsyncIterator())
                while true {
                    let next: HTTPServerRequestPart?
                    do {
                        next = try await parts.next()
                    } catch let error as HTTPParserError {
                        // Bytes that are not a request, between requests: say so once and close.
                        let writer = ResponseWriter(channel: connection.channel, connection: state, version: .http1_1, method: .GET, fileReads: fileReads)
                        await writer.sendError(
                            .badRequest, "the request could not be parsed (\(error)); send HTTP/1.1 with a valid request line and headers",
                            headers: ["connection": "close"])
                        return
                    }
                    guard let part = next else { return }
                    guard case let .head(head) = part else { continue }
                    guard try await exchange(head, parts: parts, channel: connection.channel, state: state) else { return }
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Answers one request; true when the connection can carry the next one.
    private func exchange(_ head: HTTPRequestHead, parts: InboundParts, channel: Channel, state: HTTPConnectionState) async throws -> Bool {
        let body = RequestBody(parts: parts, head: head, connection: state)
        _ = state.event(.exchangeStarted(keepAlive: head.keepsConnection, expectsContinue: head.expectsContinue, bodyEnded: body.isFinished))
        let request = Request(head: head, body: body, id: makeRequestID())
        let writer = ResponseWriter(
            channel: channel, connection: state, version: head.version, method: head.method, keepsConnection: head.keepsConnection,
            requestID: request.id, fileReads: fileReads)
        let started = ContinuousClock.now
        if let (status, message) = Self.limitViolation(head) {
            await writer.sendError(status, message, headers: ["connection": "close"])
            handler.responded(request, writer, duration: ContinuousClock.now - started)
            return false
        }
        await handler.handle(request, writer)
        handler.responded(request, writer, duration: ContinuousClock.now - started)
        switch state.event(.handlerReturned(responseComplete: writer.isComplete, responseClosesConnection: writer.closesConnection)) {
        case .readNextRequest:
            return true
        case let .drainRequestBody(limit):
            let within = try await body.drain(limit: limit)
            return state.event(.requestBodyDrained(withinLimit: within)) == .readNextRequest
        case .abort:
            writer.abort()
            return false
        default:
            return false
        }
    }
}

extension HTTPServer {
    /// Longest request target accepted (414 beyond).
    static let maximumURILength = 8 * 1024
    /// Largest header section accepted (431 beyond).
    static let maximumHeaderBytes = 64 * 1024

    static func limitViolation(_ head: HTTPRequestHead) -> (HTTPResponseStatus, String)? {
        if head.repeatsHost {
            return (.badRequest, "the request has more than one Host field; send one (RFC 9112 section 3.2)")
        }
        if head.uri.utf8.count > maximumURILength {
            return (.uriTooLong, "the request target is longer than \(maximumURILength) bytes")
        }
        let headerBytes = head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > maximumHeaderBytes {
            return (.requestHeaderFieldsTooLarge, "the request headers are larger than \(maximumHeaderBytes) bytes")
        }
        return nil
    }
}
