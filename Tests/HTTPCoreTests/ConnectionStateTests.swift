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
