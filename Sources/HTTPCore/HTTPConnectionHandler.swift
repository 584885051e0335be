import NIOCore
import NIOHTTP1
import Synchronization

/// One connection's `HTTPConnectionStateMachine` behind its lock, shared by the pipeline's
/// `HTTPConnectionHandler` (event loop) and the serve loop, the writer and the body (tasks).
final class HTTPConnectionState: Sendable {
    private let machine = Mutex(HTTPConnectionStateMachine())

    init() {}

    /// Feeds one event; the caller carries out the action outside the lock.
    func event(_ event: HTTPConnectionStateMachine.Event) -> HTTPConnectionStateMachine.Action {
        machine.withLock { $0.event(event) }
    }

    /// Requests whose response has not been written yet (for tests and logs).
    var unanswered: Int { machine.withLock { $0.unanswered } }

    /// Whether the client waits on Depot's answer to a request it has sent (see the machine's).
    var awaitsResponse: Bool { machine.withLock { $0.awaitsResponse } }

    /// Whether a request arriving now may be answered on the event loop (see the machine's).
    var mayAnswerOnEventLoop: Bool { machine.withLock { $0.mayAnswerOnEventLoop } }
}

/// Sits between the HTTP codec and the async serve loop. It closes a connection that does not
/// deliver a complete request head within the header timeout (counted from the connection's
/// start or from the moment the previous response's last byte left, never while a request is
/// being answered: a long download is not idle), and lets the fast path answer a request on
/// the event loop when no earlier request is still being answered, so pipelined responses keep
/// their order.
final class HTTPConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let state: HTTPConnectionState
    private let headTimeout: TimeAmount
    private let fastPath: (any FastPathResponder)?
    private var timer: Scheduled<Void>?
    /// The head timer the state machine armed last, and when it runs out; nil while a request
    /// is being answered. The scheduled task is not cancelled and made again for every
    /// request (a hit paid for both): when it fires early, it waits on for this deadline.
    private var armed: (id: UInt64, deadline: NIODeadline)?
    /// Parts of a request answered here, to drop until its end.
    private var swallowing = false
    /// Request heads the codec delivered on this connection (`WireFastPath` compares it with
    /// the heads it passed on, to know when the codec holds none).
    private(set) var headsSeen = 0
    /// This handler's context, for the events of answers `WireFastPath` writes.
    private var context: ChannelHandlerContext?
    /// The fast path's memo for this connection, shared with `WireFastPath`.
    var fastPathMemo = FastPathMemo()

    /// Where fast-path answers are counted; nil counts nothing.
    private let counters: ServerCounters?

    init(state: HTTPConnectionState, headTimeout: TimeAmount, fastPath: (any FastPathResponder)? = nil, counters: ServerCounters? = nil) {
        self.state = state
        self.headTimeout = headTimeout
        self.fastPath = fastPath
        self.counters = counters
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { perform(state.event(.opened), context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        perform(state.event(.opened), context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(state.event(.closed), context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        armed = nil
        self.context = nil
    }

    /// `WireFastPath` answers a request the codec never saw: the same events as `answerAtOnce`.
    func wireRequestArrived() {
        let action = state.event(.requestHeadArrived)
        // A head the wire path answers is the whole request (no body).
        _ = state.event(.requestEndArrived)
        if let context { perform(action, context) }
    }

    func wireResponseEndWritten() {
        _ = state.event(.responseEndWritten)
    }

    func wireResponseEndSent() {
        let action = state.event(.responseEndSent)
        if let context { perform(action, context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case let .head(head):
            headsSeen += 1
            guard case let .cancelHeadTimeout(mayAnswer) = state.event(.requestHeadArrived) else { return }
            armed = nil
            if mayAnswer, answerAtOnce(head, context) { return }
            context.fireChannelRead(data)
        case .body, .end:
            if case .end = part { _ = state.event(.requestEndArrived) }
            if swallowing {
                if case .end = part { swallowing = false }
                return
            }
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        context.write(data, promise: endWritten(context, promise: promise))
    }

    /// Writes the fast path's complete answer to a head, if it has one.
    private func answerAtOnce(_ head: HTTPRequestHead, _ context: ChannelHandlerContext) -> Bool {
        guard let fastPath, head.keepsConnection, !head.repeatsHost, head.version == .http1_1, head.method == .GET || head.method == .HEAD,
              let response = fastPath.immediateResponse(to: head, allocator: context.channel.allocator, memo: &fastPathMemo)
        else { return false }
        swallowing = true
        counters?.codecAnswers.wrappingAdd(1, ordering: .relaxed)
        let planned = response.response
        context.write(wrapOutboundOut(.head(planned.head)), promise: nil)
        for data in planned.body { context.write(wrapOutboundOut(.body(data)), promise: nil) }
        let completion = response.completion
        let written = endWritten(context, promise: nil)
        // On the event loop, where the future completes: the response need not be Sendable.
        written.futureResult.assumeIsolated().whenComplete { _ in
            planned.release()
            completion()
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        return true
    }

    /// Records a response end going out; the returned promise reports when it has left.
    private func endWritten(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) -> EventLoopPromise<Void> {
        _ = state.event(.responseEndWritten)
        let written = promise ?? context.eventLoop.makePromise()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in
            let (handler, context) = loopBound.value
            handler.perform(handler.state.event(.responseEndSent), context)
        }
        return written
    }

    private func perform(_ action: HTTPConnectionStateMachine.Action, _ context: ChannelHandlerContext) {
        switch action {
        case let .armHeadTimeout(id):
            armed = (id, context.eventLoop.now + headTimeout)
            if timer == nil { scheduleHeadTimer(context) }
        case .close, .abort:
            timer?.cancel()
            timer = nil
            armed = nil
            context.close(promise: nil)
        case .cancelHeadTimeout:
            armed = nil
        case .none, .sendContinue, .readNextRequest, .drainRequestBody:
            break
        }
    }

    /// Runs at the armed deadline: reports the timeout if that timer is still armed and due,
    /// waits on if it was armed again later, and ends if none is armed.
    private func scheduleHeadTimer(_ context: ChannelHandlerContext) {
        guard let armed else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: armed.deadline) {
            let (handler, context) = loopBound.value
            handler.timer = nil
            guard let armed = handler.armed else { return }
            guard armed.deadline <= context.eventLoop.now else {
                handler.scheduleHeadTimer(context)
                return
            }
            handler.perform(handler.state.event(.headTimeoutFired(id: armed.id)), context)
        }
    }
}
