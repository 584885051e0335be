import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HTTPCore

/// The connection's state machine on its own: no channel, no clock.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = HTTPConnectionStateMachine

    @Test func theHeadTimerRunsOnlyWhileNoRequestIsBeingAnswered() {
        var machine = Machine()
        guard case let .armHeadTimeout(first) = machine.event(.opened) else { Issue.record("opening arms the head timer"); return }
        #expect(machine.event(.requestHeadArrived) == .cancelHeadTimeout(mayAnswerOnEventLoop: true))
        // A timer that was already due when the head came must not close the connection.
        #expect(machine.event(.headTimeoutFired(id: first)) == .none)
        #expect(machine.event(.responseEndWritten) == .none, "the end is written but has not left yet")
        guard case let .armHeadTimeout(second) = machine.event(.responseEndSent) else { Issue.record("the last byte sent re-arms"); return }
        #expect(second != first)
        #expect(machine.event(.headTimeoutFired(id: first)) == .none, "a stale timer is ignored")
        #expect(machine.event(.headTimeoutFired(id: second)) == .close)
    }

    @Test func pipelinedRequestsKeepTheTimerOffAndTheirOrder() {
        var machine = Machine()
        _ = machine.event(.opened)
        #expect(machine.event(.requestHeadArrived) == .cancelHeadTimeout(mayAnswerOnEventLoop: true))
        #expect(machine.event(.requestHeadArrived) == .cancelHeadTimeout(mayAnswerOnEventLoop: false), "the first is still unanswered")
        _ = machine.event(.responseEndWritten)
        #expect(machine.event(.responseEndSent) == .none, "the second request is still being answered")
        _ = machine.event(.responseEndWritten)
        guard case .armHeadTimeout = machine.event(.responseEndSent) else { Issue.record("both answered: the timer runs"); return }
        _ = machine.event(.closed)
        #expect(machine.event(.responseEndSent) == .none, "a closed connection arms nothing")
    }

    @Test func nothingIsAnsweredOnTheEventLoopOnceTheConnectionIsClosing() {
        var machine = Machine()
        _ = machine.event(.opened)
        #expect(machine.mayAnswerOnEventLoop)
        _ = machine.event(.requestHeadArrived)
        _ = machine.event(.exchangeStarted(keepAlive: false, expectsContinue: false, bodyEnded: true))
        _ = machine.event(.responseEndWritten)
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .close)
        // A head that arrives before the close takes effect (a client that did not wait for
        // the answer's `Connection: close`) must not be answered after it.
        #expect(!machine.mayAnswerOnEventLoop)
        #expect(machine.event(.requestHeadArrived) == .cancelHeadTimeout(mayAnswerOnEventLoop: false))
    }

    @Test func theExchangeDecidesWhetherTheConnectionCarriesAnotherRequest() {
        var machine = Machine()
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: true))
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .readNextRequest)
        #expect(machine.event(.handlerReturned(responseComplete: false, responseClosesConnection: false)) == .abort)
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: true)) == .close)

        _ = machine.event(.exchangeStarted(keepAlive: false, expectsContinue: false, bodyEnded: true))
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .close, "HTTP/1.0 or Connection: close")

        // A body the handler left unread is skipped, up to a limit, before the next request.
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: false))
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .drainRequestBody(limit: Machine.drainLimit))
        #expect(machine.event(.requestBodyDrained(withinLimit: true)) == .readNextRequest)
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: false))
        _ = machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false))
        #expect(machine.event(.requestBodyDrained(withinLimit: false)) == .close)

        // A body read to its end needs no draining.
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: false))
        _ = machine.event(.requestBodyEnded)
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .readNextRequest)
    }

    @Test func aClientStillWaitingFor100ContinueEndsTheConnection() {
        var machine = Machine()
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: true, bodyEnded: false))
        // Answered without asking for the body (a refusal): the client never sends it.
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .close)

        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: true, bodyEnded: false))
        #expect(machine.event(.continueRequested) == .sendContinue)
        #expect(machine.event(.continueRequested) == .none, "100 Continue goes out once")
        #expect(machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false)) == .drainRequestBody(limit: Machine.drainLimit))
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: true, bodyEnded: false))
        #expect(machine.event(.continueRequested) == .sendContinue, "each request gets its own")
    }

    /// Whose move it is, for the idle timeout: the client's while it owes a head or the rest
    /// of a request, Depot's from the request's end until its answer's end is written.
    @Test func theClientAwaitsAResponseFromItsRequestsEndToTheAnswersEnd() {
        var machine = Machine()
        _ = machine.event(.opened)
        #expect(!machine.awaitsResponse, "no request yet")
        // A GET: its end follows its head.
        _ = machine.event(.requestHeadArrived)
        #expect(!machine.awaitsResponse, "the head alone: the end is still to come")
        _ = machine.event(.requestEndArrived)
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: true))
        #expect(machine.awaitsResponse, "a miss on a slow backend is Depot's wait")
        _ = machine.event(.responseEndWritten)
        #expect(!machine.awaitsResponse, "answered: what is left is the client's to read")
        _ = machine.event(.responseEndSent)

        // An upload: the body is the client's to send; once it is all in, Depot's to answer,
        // even before the handler has read it (it may be asking Glance first).
        _ = machine.event(.requestHeadArrived)
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: false, bodyEnded: false))
        #expect(!machine.awaitsResponse, "the body is still to come")
        _ = machine.event(.requestEndArrived)
        #expect(machine.awaitsResponse, "the whole upload arrived, unread")
        _ = machine.event(.requestBodyEnded)
        #expect(machine.awaitsResponse)
        _ = machine.event(.responseEndWritten)
        _ = machine.event(.handlerReturned(responseComplete: true, responseClosesConnection: false))

        // Expect: 100-continue: Depot decides whether to ask for the body.
        _ = machine.event(.requestHeadArrived)
        _ = machine.event(.exchangeStarted(keepAlive: true, expectsContinue: true, bodyEnded: false))
        #expect(machine.awaitsResponse, "the client waits for 100 Continue")
        _ = machine.event(.continueRequested)
        #expect(!machine.awaitsResponse, "asked for: the body is the client's to send")
        _ = machine.event(.requestEndArrived)
        #expect(machine.awaitsResponse)
        _ = machine.event(.responseEndWritten)
        #expect(!machine.awaitsResponse)
    }
}

/// `HTTPConnectionHandler` on an `EmbeddedChannel` behind NIO's HTTP codec, its time advanced
/// by hand: the header timeout (RFC 9112 leaves it to the server; `limits.header_timeout`)
/// without waiting for it.
@Suite struct ConnectionHandlerTests {
    static let timeout = TimeAmount.seconds(1)

    func connectedChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(state: HTTPConnectionState(), headTimeout: Self.timeout))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9494)).wait()
        return channel
    }

    func send(_ channel: EmbeddedChannel, _ text: String) throws {
        try channel.writeInbound(channel.allocator.buffer(string: text))
    }

    /// Plays the serve loop: takes the request and answers 200 with an empty body.
    func answer(_ channel: EmbeddedChannel) throws {
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) {
            if case .end = part { break }
        }
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "0"])
        try channel.writeOutbound(HTTPServerResponsePart.head(head))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
    }

    /// The request's end as the codec delivers it makes the wait Depot's, whether or not the
    /// serve loop has read the body yet.
    @Test func aRequestIsAwaitingItsAnswerOnceItsEndHasArrived() throws {
        let state = HTTPConnectionState()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: false)
        try channel.pipeline.syncOperations.addHandler(HTTPConnectionHandler(state: state, headTimeout: Self.timeout))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9494)).wait()
        try send(channel, "PUT /v2/images/i/file HTTP/1.1\r\nHost: depot\r\nContent-Length: 10\r\n\r\n12345")
        #expect(!state.awaitsResponse, "half the body is still the client's to send")
        try send(channel, "67890")
        #expect(state.awaitsResponse, "the whole request is in, unread")
        try answer(channel)
        #expect(!state.awaitsResponse, "answered")
        try send(channel, "GET /healthz HTTP/1.1\r\nHost: depot\r\n\r\n")
        #expect(state.awaitsResponse, "a GET is whole at its head's end")
    }

    @Test func aSlowlorisHeadThatTricklesIsClosedAtTheTimeout() throws {
        let channel = try connectedChannel()
        try send(channel, "GET /healthz HTTP/1.1\r\nHost: depot\r\n")
        // A header line every 100 ms would keep an idle timer from ever firing.
        for _ in 0..<9 {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
            try send(channel, "X-Slow: a\r\n")
        }
        #expect(channel.isActive, "0.9 s is within the timeout")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        #expect(!channel.isActive, "the head never ended: closed at 1 s")
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "no answer to a request whose head never ended")
    }

    @Test func anIdleKeepAliveConnectionIsClosedOneTimeoutAfterItsLastAnswer() throws {
        let channel = try connectedChannel()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        try send(channel, "GET /healthz HTTP/1.1\r\nHost: depot\r\n\r\n")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        #expect(channel.isActive, "the head came in time")
        try answer(channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(900))
        #expect(channel.isActive, "the clock restarted at the answer's end")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        #expect(!channel.isActive)
    }

    @Test func aConnectionThatKeepsAskingStaysOpen() throws {
        let channel = try connectedChannel()
        for _ in 0..<6 {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
            try send(channel, "GET /healthz HTTP/1.1\r\nHost: depot\r\n\r\n")
            try answer(channel)
        }
        #expect(channel.isActive, "requests every 0.5 s keep the connection")
    }

    @Test func aResponseLongerThanTheTimeoutIsNotCutOff() throws {
        let channel = try connectedChannel()
        try send(channel, "GET /v2/images/x/file HTTP/1.1\r\nHost: depot\r\n\r\n")
        // The download takes 5 timeouts.
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive, "a request being answered is not idle")
        try answer(channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }
}
