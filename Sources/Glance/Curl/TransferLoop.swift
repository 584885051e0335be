import CCurl
import CFileIO
import Foundation
import Synchronization

/// What the transfer loop needs to run one exchange.
struct TransferJob: Sendable {
    var request: HTTPRequest
    var limits: TransferLimits
    var handling: ResponseHandling
    var transfer: Transfer
}

/// libcurl's multi interface on one thread of its own: every HTTP exchange of every Glance
/// client in the process runs here, however many there are, so the process's thread count does
/// not grow with its transfers.
///
/// Other threads reach the loop only through `submit` (a queue, then `curl_multi_wakeup`, which
/// libcurl allows from any thread). Everything else (the multi handle, the easy handles,
/// libcurl's callbacks, `curl_easy_pause`) happens on the loop's thread: libcurl's handles are
/// not thread-safe, and `curl_easy_pause` must come from the thread that drives the transfer.
/// Callbacks never block: a download whose consumer is behind pauses (`CURL_WRITEFUNC_PAUSE`),
/// an upload whose producer is behind pauses (`CURL_READFUNC_PAUSE`), and `ByteStream` asks for
/// the unpause.
final class TransferLoop: Sendable {
    enum Direction: Sendable { case receive, send }

    enum Command: Sendable {
        case start(TransferJob)
        case resume(id: Int, Direction)
        case cancel(id: Int)
    }

    /// The process's loop, started at first use and never stopped (like NIO's singletons).
    static let shared = TransferLoop(name: "depot-curl")

    private let multi: MultiHandle
    private let inbox = Mutex<[Command]>([])
    private let lastID = Atomic<Int>(0)

    init(name: String) {
        CurlGlobal.ensureInitialized()
        multi = MultiHandle()
        let thread = Thread { [self] in
            // Named from inside, by the call the hash threads use: Foundation on Linux drops a
            // name set before `start`, leaving the creator's (a dispatch worker's
            // "com.apple.root.default-qos") in top -H and perf, and `Thread.current.name` set in
            // here did not always reach the kernel (a clean-clone run saw the loop unnamed in
            // TransferLoopThreadTests).
            _ = depot_name_thread(name)
            LoopThread(multi: multi.raw, takeCommands: takeCommands).run()
        }
        thread.start()
    }

    /// Starts an exchange; its `Transfer` reports how it goes.
    func start(_ request: HTTPRequest, limits: TransferLimits, handling: ResponseHandling, responseBuffer: Int = 1 << 20) -> Transfer {
        let id = lastID.add(1, ordering: .relaxed).newValue
        var requestBuffer: Int?
        if case .streamed = request.body { requestBuffer = 1 << 20 }
        let transfer = Transfer(id: id, loop: self, responseBuffer: responseBuffer, requestBuffer: requestBuffer)
        submit(.start(TransferJob(request: request, limits: limits, handling: handling, transfer: transfer)))
        return transfer
    }

    func submit(_ command: Command) {
        inbox.withLock { $0.append(command) }
        curl_multi_wakeup(multi.raw)
    }

    private func takeCommands() -> [Command] {
        inbox.withLock { commands in
            defer { commands.removeAll(keepingCapacity: true) }
            return commands
        }
    }
}

/// The multi handle. Only `curl_multi_wakeup` is called on it from other threads (documented as
/// safe); everything else happens on the loop's thread, which owns it for the process's life.
private final class MultiHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    static let maxIdleConnections = 64

    init() {
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed: out of memory") }
        // Idle connections kept for reuse, to every backend together: the bound the per-client
        // handle pools had. libcurl's default grows with the handles added (four per handle).
        _ = depot_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, Self.maxIdleConnections)
        raw = multi
    }
}

/// The loop's own state, used by its thread only.
private final class LoopThread {
    let multi: UnsafeMutableRawPointer
    let takeCommands: () -> [TransferLoop.Command]
    var running: [Int: RunningTransfer] = [:]
    var byHandle: [UnsafeMutableRawPointer: RunningTransfer] = [:]
    /// Easy handles kept for reuse (their options reset; connections live in the multi handle).
    var idle: [EasyHandle] = []
    var lastStallCheck = ContinuousClock.now

    /// How often running transfers are checked for stalls.
    static let stallCheckInterval = Duration.milliseconds(250)

    init(multi: UnsafeMutableRawPointer, takeCommands: @escaping () -> [TransferLoop.Command]) {
        self.multi = multi
        self.takeCommands = takeCommands
    }

    func run() -> Never {
        var stillRunning: Int32 = 0
        while true {
            for command in takeCommands() { carryOut(command) }
            _ = curl_multi_perform(multi, &stillRunning)
            collectFinished()
            let now = ContinuousClock.now
            if now - lastStallCheck >= Self.stallCheckInterval {
                lastStallCheck = now
                for transfer in running.values {
                    if let seconds = transfer.checkStall(at: now) { end(transfer, failure: .stalled(seconds: seconds)) }
                }
            }
            // Returns early on socket activity, libcurl's own timers, or `curl_multi_wakeup`.
            _ = curl_multi_poll(multi, nil, 0, Int32(Self.stallCheckInterval.components.attoseconds / 1_000_000_000_000_000), nil)
        }
    }

    private func carryOut(_ command: TransferLoop.Command) {
        switch command {
        case let .start(job):
            let handle = idle.popLast() ?? EasyHandle()
            let transfer = RunningTransfer(job: job, handle: handle, now: .now)
            running[job.transfer.id] = transfer
            byHandle[handle.raw] = transfer
            let code = curl_multi_add_handle(multi, handle.raw)
            if code != CURLM_OK {
                end(transfer, failure: .curl(code: Int(code.rawValue), message: String(cString: curl_multi_strerror(code))))
            }
        case let .resume(id, direction):
            running[id]?.resume(direction, at: .now)
        case let .cancel(id):
            if let transfer = running[id] { end(transfer, failure: .cancelled) }
        }
    }

    private func collectFinished() {
        var queued: Int32 = 0
        while let message = curl_multi_info_read(multi, &queued) {
            guard depot_curl_msg_is_done(message) != 0, let handle = message.pointee.easy_handle,
                let transfer = byHandle[handle]
            else { continue }
            end(transfer, code: depot_curl_msg_result(message))
        }
    }

    /// Removes a transfer from the multi handle, reports its outcome and keeps its handle.
    private func end(_ transfer: RunningTransfer, code: CURLcode = CURLE_OK, failure: TransportFailure? = nil) {
        _ = curl_multi_remove_handle(multi, transfer.handle.raw)
        running[transfer.job.transfer.id] = nil
        byHandle[transfer.handle.raw] = nil
        transfer.finish(code: code, failure: failure)
        curl_easy_reset(transfer.handle.raw)
        if idle.count < 64 { idle.append(transfer.handle) }
    }
}
