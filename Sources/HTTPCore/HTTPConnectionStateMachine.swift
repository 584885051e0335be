/// What one HTTP/1.1 connection knows, as a value: the request-head timeout, the requests in
/// flight, and, for the request being answered, keep-alive, `100 Continue` and whether its body
/// was read to the end. Pure: the owner feeds it events under one lock and carries out the
/// returned action outside it (`HTTPConnectionHandler` on the event loop, the serve loop in
/// `HTTPServer`).
///
/// Two sides feed it. The channel side sees every request head and every response end as they
/// pass through the pipeline (pipelined requests included); the exchange side is the serve
/// loop, one request at a time, deciding whether the connection can carry another request.
struct HTTPConnectionStateMachine: Sendable {
    enum Event: Equatable {
        /// The connection is open: the first request head is awaited.
        case opened
        /// A request head arrived.
        case requestHeadArrived
        /// The end of the request whose head arrived last arrived (its whole body, if any, is
        /// in Depot's hands, read or not).
        case requestEndArrived
        /// A response's end was written into the pipeline (not yet sent).
        case responseEndWritten
        /// A response's end left (or its write failed): the client has the whole answer.
        case responseEndSent
        /// The head timer armed with this id ran out.
        case headTimeoutFired(id: UInt64)
        /// The connection closed.
        case closed

        /// The serve loop hands a request to the handler.
        case exchangeStarted(keepAlive: Bool, expectsContinue: Bool, bodyEnded: Bool)
        /// The handler wants the client to send its body (`Expect: 100-continue`).
        case continueRequested
        /// The request body was read to its end.
        case requestBodyEnded
        /// The handler returned.
        case handlerReturned(responseComplete: Bool, responseClosesConnection: Bool)
        /// What was left of the request body was skipped; false when it was over the limit.
        case requestBodyDrained(withinLimit: Bool)
    }

    enum Action: Equatable {
        case none
        /// Start the head timer (replacing any running one); it reports back with this id.
        case armHeadTimeout(id: UInt64)
        /// Stop the head timer. `mayAnswerOnEventLoop`: no earlier request of the connection
        /// is still being answered, so an answer written now keeps pipelined responses in order.
        case cancelHeadTimeout(mayAnswerOnEventLoop: Bool)
        /// Send `100 Continue`.
        case sendContinue
        /// Read the next request.
        case readNextRequest
        /// Skip the rest of the request body (up to this many bytes) before the next request.
        case drainRequestBody(limit: Int)
        /// Close the connection after a complete response.
        case close
        /// Close the connection now: the response was left unfinished.
        case abort
    }

    /// Bytes of an unread request body skipped to keep the connection; longer bodies close it.
    static let drainLimit = 1 << 20

    /// Requests whose head arrived and whose response end was not written yet.
    private(set) var unanswered = 0
    /// Response ends written but not yet sent.
    private(set) var endsInTransit = 0
    /// A request head arrived whose end has not: the client has more of it to send.
    private(set) var requestEndPending = false
    /// The id of the running head timer, if any.
    private(set) var headTimer: UInt64?
    private var nextTimerID: UInt64 = 0
    private(set) var isClosed = false
    /// The serve loop decided to close the connection after its response (or a timer did):
    /// nothing more is answered on it.
    private(set) var isClosing = false
    private var exchange = Exchange()

    /// The request the serve loop is answering.
    struct Exchange: Sendable {
        var keepAlive = true
        var expectsContinue = false
        var continueSent = false
        var bodyEnded = true
    }

    init() {}

    mutating func event(_ event: Event) -> Action {
        switch event {
        case .opened:
            return unanswered == 0 && endsInTransit == 0 ? arm() : .none
        case .requestHeadArrived:
            let mayAnswer = mayAnswerOnEventLoop
            unanswered += 1
            requestEndPending = true
            headTimer = nil
            return .cancelHeadTimeout(mayAnswerOnEventLoop: mayAnswer)
        case .requestEndArrived:
            requestEndPending = false
            return .none
        case .responseEndWritten:
            unanswered = max(0, unanswered - 1)
            endsInTransit += 1
            return .none
        case .responseEndSent:
            endsInTransit = max(0, endsInTransit - 1)
            // The clock restarts when the last byte has gone: the parts before it may have
            // been queued behind a slow client for longer than the timeout.
            return unanswered == 0 && endsInTransit == 0 ? arm() : .none
        case let .headTimeoutFired(id):
            guard !isClosed, headTimer == id, unanswered == 0 else { return .none }
            headTimer = nil
            isClosing = true
            return .close
        case .closed:
            isClosed = true
            headTimer = nil
            return .none
        case let .exchangeStarted(keepAlive, expectsContinue, bodyEnded):
            exchange = Exchange(keepAlive: keepAlive, expectsContinue: expectsContinue, continueSent: false, bodyEnded: bodyEnded)
            return .none
        case .continueRequested:
            guard !exchange.continueSent else { return .none }
            exchange.continueSent = true
            return .sendContinue
        case .requestBodyEnded:
            exchange.bodyEnded = true
            return .none
        case let .handlerReturned(complete, closes):
            let action = afterHandler(complete: complete, closes: closes)
            if action == .close || action == .abort { isClosing = true }
            return action
        case let .requestBodyDrained(withinLimit):
            exchange.bodyEnded = true
            guard withinLimit && !isClosed else {
                isClosing = true
                return .close
            }
            return .readNextRequest
        }
    }

    /// The client has sent the whole of a request that is not answered to its end yet: what
    /// happens next is Depot's to do (`IdleWatchStateMachine`). A request whose end has not
    /// arrived is the client's to finish, unless it waits for `100 Continue`. Arrived is not
    /// read: an upload whose body is all in while Depot asks Glance whether it may be stored
    /// waits on Depot.
    var awaitsResponse: Bool {
        guard unanswered > 0 else { return false }
        let waitsForContinue = exchange.expectsContinue && !exchange.continueSent
        return !requestEndPending || waitsForContinue
    }

    /// No earlier request is still being answered and the connection is staying open: an
    /// answer written on the event loop now keeps pipelined responses in order.
    var mayAnswerOnEventLoop: Bool { unanswered == 0 && !isClosing && !isClosed }

    private func afterHandler(complete: Bool, closes: Bool) -> Action {
        // A handler that returned without finishing leaves a broken exchange.
        guard complete else { return .abort }
        // A client still waiting for 100 Continue will not send its body: the connection
        // cannot carry another request.
        if exchange.expectsContinue && !exchange.continueSent && !exchange.bodyEnded { return .close }
        guard exchange.keepAlive, !closes, !isClosed else { return .close }
        // The next request starts after this one's body: skip what the handler left.
        return exchange.bodyEnded ? .readNextRequest : .drainRequestBody(limit: Self.drainLimit)
    }

    private mutating func arm() -> Action {
        guard !isClosed else { return .none }
        nextTimerID += 1
        headTimer = nextTimerID
        return .armHeadTimeout(id: nextTimerID)
    }
}
