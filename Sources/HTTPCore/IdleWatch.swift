import CFileIO
import Glibc
import NIOCore

/// Decides when a connection has been idle for the idle timeout (`limits.idle_timeout`): no
/// byte received from the client and none of Depot's bytes acknowledged by it. A value: the
/// owner (`IdleConnectionWatch`) samples the connection's progress counters on a timer and feeds
/// them in, and carries out the returned action.
///
/// Progress is what the client's side of the socket shows, not when Depot's writes complete: a
/// write completes only once its last byte has left, so a hit sent as one long write looked idle
/// for the whole transfer and a slow download was cut off while its bytes flowed. A client that
/// stops reading stops acknowledging, so it is still closed after the timeout, as nginx's
/// `send_timeout` closes it.
///
/// The clock runs only while it is the client's turn. A client that has sent its whole
/// request, and holds nothing of Depot's unacknowledged, is waiting on Depot: on a miss whose
/// backend is slow to start or pauses mid-body, on an upload's final checks. Closing it at the
/// idle timeout would blame the client for Depot's wait and leave it with no answer at all.
/// nginx does the same: `send_timeout` runs only while a write to the client is pending, and a
/// wait on the upstream falls under `proxy_read_timeout`. A wait of Depot's has a limit of its
/// own, `serverWaitLimit` (`limits.response_wait_timeout`, at least the idle timeout): the
/// backend client's stall limit (30 s below 1 KiB/s) ends a slow backend's transfer well before
/// it, so it only closes a connection whose answer is stuck (a hung disk, a lost task). When
/// the move passes back to the client, its clock starts afresh.
///
/// The check runs every quarter of the timeout and at the moment the timeout would run out, so
/// a connection is closed between 1 and 1.25 timeouts after its last progress.
struct IdleWatchStateMachine: Sendable {
    /// A connection's counters, compared as a whole: any change is progress.
    struct Progress: Equatable, Sendable {
        /// Bytes the peer acknowledged (TCP_INFO `tcpi_bytes_acked`; 0 where unknown).
        var bytesAcknowledged: UInt64 = 0
        /// Bytes received from the peer (TCP_INFO `tcpi_bytes_received`; 0 where unknown).
        var bytesReceived: UInt64 = 0
        /// Reads the pipeline delivered: progress on channels that are not TCP sockets.
        var reads: UInt64 = 0
    }

    enum Action: Equatable {
        /// Sample again after this long.
        case checkAgain(after: TimeAmount)
        /// The connection has been idle for the timeout: close it.
        case close
    }

    let timeout: TimeAmount
    /// The longest one wait on Depot may last.
    let serverWaitLimit: TimeAmount
    private var last: Progress
    private var lastChange: NIODeadline
    /// When the wait on Depot going on now began.
    private var serverWaitStart: NIODeadline?

    /// - Parameters:
    ///   - timeout: idle time after which the connection is closed; positive.
    ///   - serverWaitLimit: the longest wait on Depot; the timeout if that is longer.
    ///   - now: the connection's start, which counts as progress.
    init(timeout: TimeAmount, serverWaitLimit: TimeAmount? = nil, now: NIODeadline, progress: Progress) {
        self.timeout = timeout
        self.serverWaitLimit = max(timeout, serverWaitLimit ?? timeout)
        self.last = progress
        self.lastChange = now
    }

    /// How long the owner waits before its first sample.
    var firstCheck: TimeAmount { Self.interval(timeout) }

    /// A sample of the counters taken at `now`. `waitingOnServer`: the client has sent its
    /// whole request and all of Depot's bytes so far have been acknowledged, so the next move
    /// is Depot's: the client's clock does not run, and the wait closes the connection only
    /// once it has lasted `serverWaitLimit`.
    mutating func checked(now: NIODeadline, progress: Progress, waitingOnServer: Bool = false) -> Action {
        let moved = progress != last
        last = progress
        if waitingOnServer {
            // The client's clock restarts when the move is its own again.
            lastChange = now
            let start = serverWaitStart ?? now
            serverWaitStart = start
            let waited = now - start
            if waited >= serverWaitLimit { return .close }
            return .checkAgain(after: min(Self.interval(timeout), serverWaitLimit - waited))
        }
        serverWaitStart = nil
        if moved { lastChange = now }
        let idle = now - lastChange
        if idle >= timeout { return .close }
        return .checkAgain(after: min(Self.interval(timeout), timeout - idle))
    }

    private static func interval(_ timeout: TimeAmount) -> TimeAmount {
        max(.nanoseconds(timeout.nanoseconds / 4), .milliseconds(1))
    }
}

/// Closes a connection that has been idle for the idle timeout (see `IdleWatchStateMachine`).
/// It costs nothing per request: a read adds one to a counter, writes pass it by, and a timer
/// reads the socket's `TCP_INFO` a few times per timeout. Put it first in the pipeline, so
/// that reads are counted as they arrive (before TLS).
final class IdleConnectionWatch: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    /// A connection's TCP counters, as `TCP_INFO` gives them.
    struct TCPCounters: Sendable {
        var bytesAcknowledged: UInt64
        var bytesReceived: UInt64
        /// Bytes of Depot's queued in the socket: not sent yet, or sent and not acknowledged;
        /// nil where the kernel does not say (`tcpi_notsent_bytes` came with Linux 4.6), and
        /// then the wait is never taken for Depot's.
        var hasUnacknowledgedBytes: Bool?
    }

    /// Reads a connection's TCP counters; nil where the channel has none (not a TCP socket).
    typealias CounterSource = (Channel) -> TCPCounters?

    private let timeout: TimeAmount
    private let serverWaitLimit: TimeAmount?
    private let counters: CounterSource
    private let awaitsResponse: @Sendable () -> Bool
    private var machine: IdleWatchStateMachine?
    private var reads: UInt64 = 0
    private var timer: Scheduled<Void>?

    /// - Parameters:
    ///   - counters: where TCP progress comes from; the socket's `TCP_INFO` by default (tests
    ///     give their own).
    ///   - awaitsResponse: whether the client has sent a whole request that Depot has not
    ///     finished answering (`HTTPConnectionState.awaitsResponse`); while it has and none of
    ///     Depot's bytes are unacknowledged, the wait is Depot's.
    ///   - serverWaitLimit: the longest wait on Depot (`IdleWatchStateMachine`).
    init(
        timeout: TimeAmount, serverWaitLimit: TimeAmount? = nil, counters: @escaping CounterSource = IdleConnectionWatch.tcpCounters,
        awaitsResponse: @escaping @Sendable () -> Bool = { false }
    ) {
        self.timeout = timeout
        self.serverWaitLimit = serverWaitLimit
        self.counters = counters
        self.awaitsResponse = awaitsResponse
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reads &+= 1
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard machine == nil else { return }
        let machine = IdleWatchStateMachine(timeout: timeout, serverWaitLimit: serverWaitLimit, now: context.eventLoop.now, progress: progress(context))
        schedule(machine.firstCheck, context)
        self.machine = machine
    }

    private func stop() {
        timer?.cancel()
        timer = nil
    }

    private func progress(_ context: ChannelHandlerContext) -> IdleWatchStateMachine.Progress {
        progress(counters(context.channel))
    }

    private func progress(_ tcp: TCPCounters?) -> IdleWatchStateMachine.Progress {
        .init(bytesAcknowledged: tcp?.bytesAcknowledged ?? 0, bytesReceived: tcp?.bytesReceived ?? 0, reads: reads)
    }

    private func schedule(_ delay: TimeAmount, _ context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (watch, context) = loopBound.value
            watch.check(context)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        guard timer != nil, var machine else { return }
        let tcp = counters(context.channel)
        // Depot's bytes still queued to the client mean the client is the one to move; a
        // queue nobody can see is taken for the client's too (a stalled reader is closed).
        let waitingOnServer = tcp?.hasUnacknowledgedBytes == false && awaitsResponse()
        let action = machine.checked(now: context.eventLoop.now, progress: progress(tcp), waitingOnServer: waitingOnServer)
        self.machine = machine
        switch action {
        case let .checkAgain(after):
            schedule(after, context)
        case .close:
            timer = nil
            context.close(promise: nil)
        }
    }

    /// The socket's acknowledged and received byte counts and its send queue from `TCP_INFO`,
    /// read on the event loop (one getsockopt); nil for a channel that is not a socket or when
    /// the call fails.
    static func tcpCounters(_ channel: Channel) -> TCPCounters? {
        guard let socket = channel as? SocketOptionProvider else { return nil }
        let info: EventLoopFuture<depot_tcp_info> = socket.unsafeGetSocketOption(
            level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_INFO))
        // On the channel's own event loop the option is read at once and the future is
        // already complete, so its callback runs before this returns.
        var counters: TCPCounters?
        info.assumeIsolated().whenSuccess { value in
            var acknowledged: UInt64 = 0, received: UInt64 = 0
            var notSent: UInt32 = 0, unacknowledged: UInt32 = 0
            withUnsafePointer(to: value) { depot_tcp_info_progress($0, &acknowledged, &received, &notSent, &unacknowledged) }
            counters = TCPCounters(
                bytesAcknowledged: acknowledged, bytesReceived: received,
                hasUnacknowledgedBytes: kernelReportsUnsentBytes ? notSent > 0 || unacknowledged > 0 : nil)
        }
        return counters
    }
}

/// Whether this kernel fills `tcpi_notsent_bytes` (Linux 4.6 and later): an older one leaves
/// it zero, which would make a client that stopped reading look like one waiting on Depot.
let kernelReportsUnsentBytes: Bool = {
    var name = utsname()
    guard uname(&name) == 0 else { return false }
    let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
    guard numbers.count == 2 else { return false }
    return (numbers[0], numbers[1]) >= (4, 6)
}()
