import CCurl
import Foundation

/// One exchange while it runs on the transfer loop: its easy handle, and the state libcurl's
/// callbacks share. Used on the loop's thread only.
final class RunningTransfer {
    let job: TransferJob
    let handle: EasyHandle
    private var transfer: Transfer { job.transfer }
    /// libcurl keeps this pointer until the handle is reset: it lives as long as the transfer.
    let errorBuffer: UnsafeMutablePointer<CChar>
    var headerList: UnsafeMutablePointer<curl_slist>?
    var source: RequestSource

    private var status = 0
    private var headers: [(name: String, value: String)] = []
    private var head: HTTPResponseHead?
    /// The head was handed to the consumer, which reads the body from `transfer.body`.
    private var streaming = false
    private var collected: [UInt8] = []
    /// The body of a response that is not streamed and has a status of 300 and up: Glance's
    /// error message, capped.
    private var errorBody: [UInt8] = []
    private var failure: TransportFailure?
    private var stall: StallWindow
    private var paused: (receive: Bool, send: Bool) = (false, false)

    static let maxErrorBody = 64 * 1024

    init(job: TransferJob, handle: EasyHandle, now: ContinuousClock.Instant) {
        self.job = job
        self.handle = handle
        source = RequestSource(job.request.body, stream: job.transfer.requestBody)
        stall = StallWindow(limit: job.limits.stallTimeout, minimumSpeed: job.limits.minimumSpeed, now: now)
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        configure()
    }

    deinit {
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    // MARK: Events from the loop

    func resume(_ direction: TransferLoop.Direction, at now: ContinuousClock.Instant) {
        switch direction {
        case .receive: guard paused.receive else { return }; paused.receive = false
        case .send: guard paused.send else { return }; paused.send = false
        }
        if !paused.receive && !paused.send { stall.resume(at: now) }
        // libcurl may call the write callback from inside this call, with the data it held.
        _ = curl_easy_pause(handle.raw, (paused.receive ? depot_curlpause_recv() : 0) | (paused.send ? depot_curlpause_send() : 0))
    }

    func checkStall(at now: ContinuousClock.Instant) -> Double? { stall.check(at: now) }

    /// Reports the outcome to the consumer: libcurl's result, or why the loop ended it.
    func finish(code: CURLcode, failure ended: TransportFailure?) {
        var outcome: TransportFailure?
        if let error = source.error {
            outcome = .requestBody(error)
        } else if let failure = ended ?? failure {
            outcome = failure
        } else if code != CURLE_OK {
            let detail = String(cString: errorBuffer)
            outcome = .curl(code: Int(code.rawValue), message: detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail)
        } else if head == nil {
            outcome = .curl(code: Int(CURLE_GOT_NOTHING.rawValue), message: "no HTTP response")
        }
        if !streaming {
            if let outcome {
                transfer.open(.failed(outcome))
            } else if let head {
                let isCollected = job.handling == .collect && head.status < 300
                transfer.open(.complete(head, isCollected ? collected : errorBody))
            }
        }
        transfer.end(failure: outcome)
    }

    // MARK: libcurl's callbacks

    func headerLine(_ line: Substring) -> Bool {
        if line.hasPrefix("HTTP/") {
            let parts = line.split(separator: " ", maxSplits: 2)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            headers = []
            return true
        }
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty {
            // End of a header section; 1xx responses are followed by the real one.
            guard status >= 200 else { return true }
            let head = HTTPResponseHead(status: status, headers: headers)
            self.head = head
            if isStreamed(head) {
                streaming = true
                transfer.open(.streaming(head))
            }
            return true
        }
        if let colon = trimmed.firstIndex(of: ":") {
            let name = String(trimmed[..<colon])
            let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers.append((name, value))
        }
        return true
    }

    private func isStreamed(_ head: HTTPResponseHead) -> Bool {
        guard case let .stream(allStatuses) = job.handling else { return false }
        return head.status < 300 || allStatuses
    }

    /// Returns what the write callback returns: the count taken, 0 to abort, or
    /// `CURL_WRITEFUNC_PAUSE`.
    func body(_ buffer: UnsafeRawBufferPointer) -> Int {
        guard let head else { return buffer.count }
        guard streaming else {
            if head.status < 300 {
                collected.append(contentsOf: buffer)
            } else {
                errorBody.append(contentsOf: buffer.prefix(Self.maxErrorBody - errorBody.count))
            }
            stall.moved(buffer.count)
            return buffer.count
        }
        switch transfer.body.offer(Array(buffer)) {
        case .accepted:
            stall.moved(buffer.count)
            return buffer.count
        case .full:
            // libcurl keeps these bytes and offers them again once unpaused.
            paused.receive = true
            stall.pause(at: .now)
            return depot_curl_writefunc_pause()
        case .refused:
            failure = .cancelled
            return 0
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        switch source.read(into: buffer) {
        case let .bytes(count):
            stall.moved(count)
            return count
        case .wait:
            paused.send = true
            stall.pause(at: .now)
            return depot_curl_readfunc_pause()
        case .failed:
            return depot_curl_readfunc_abort()
        }
    }
}
