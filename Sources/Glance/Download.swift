import Foundation
import Synchronization

/// What a download's first response said about the bytes to come.
public struct DownloadHead: Sendable, Equatable {
    /// 200 for the whole image, 206 for a range.
    public var status: Int
    /// The bytes this download will deliver (the range's length, or the image's size).
    public var length: UInt64?
    /// The image's total size, from `Content-Range` or `Content-Length`.
    public var totalSize: UInt64?
    /// The absolute byte range delivered (inclusive), for range downloads.
    public var range: ClosedRange<UInt64>?
    /// `Content-MD5` as Glance sends it: hex MD5 of the whole image.
    public var contentMD5: String?
    public var headers: HTTPResponseHead
}

/// An image download in progress: its head, and its body as an async sequence of chunks.
///
/// Memory stays bounded whatever the image size: when the consumer is slow the transfer thread
/// waits, and TCP pushes back on the server. A reset mid-body is resumed with a range request
/// transparently, up to the client's retry limit; the consumer sees one continuous stream.
/// Dropping the download (or cancelling the consuming task) stops the transfer.
public struct ImageDownload: AsyncSequence, Sendable {
    public typealias Element = [UInt8]

    public let head: DownloadHead
    let consumer: DownloadConsumer

    public struct AsyncIterator: AsyncIteratorProtocol {
        let consumer: DownloadConsumer

        public mutating func next() async throws -> [UInt8]? {
            try await consumer.channel.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(consumer: consumer) }
}

/// Ends the transfer when the last reference to a download goes away.
final class DownloadConsumer: Sendable {
    let channel: ByteChannel
    init(channel: ByteChannel) { self.channel = channel }
    deinit { channel.cancelConsumer() }
}

/// The state a resuming download keeps across attempts.
private final class ResumeState: @unchecked Sendable {
    /// Absolute offset of the next byte wanted.
    var next: UInt64
    /// Absolute end (exclusive), once known.
    var end: UInt64?
    var first: DownloadHead?
    var delivered: UInt64 = 0

    init(start: UInt64, end: UInt64?) {
        self.next = start
        self.end = end
    }
}

extension GlanceClient {
    /// Opens `GET /v2/images/{id}/file`, optionally for a byte range, and returns once the
    /// response head arrived (errors such as 404 are thrown here).
    public func openDownload(imageID: String, range: ClosedRange<UInt64>? = nil, auth: RequestAuth = .service) async throws(GlanceError) -> ImageDownload {
        let channel = ByteChannel(capacity: configuration.downloadBufferBytes)
        let consumer = DownloadConsumer(channel: channel)
        let opened = Mutex<CheckedContinuation<Result<DownloadHead, GlanceError>, Never>?>(nil)
        // Made here, not inside the transfer's closure: a `[weak consumer]` there would make
        // that closure hold the consumer strongly for the whole transfer, and a download its
        // reader dropped would never stop (it would block, holding a backend worker for good).
        let consumerGone: @Sendable () -> Bool = { [weak consumer] in consumer == nil }
        let target = try await resolve(auth)
        let result: Result<DownloadHead, GlanceError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                opened.withLock { $0 = continuation }
                TransferThreads.detach { [self] in
                    let outcome = runDownload(
                        imageID: imageID, range: range, target: target,
                        isCancelled: consumerGone,
                        onHead: { head in opened.withLock { $0.take() }?.resume(returning: .success(head)) },
                        sink: { buffer in
                            guard channel.put(buffer) else { throw GlanceError.cancelled }
                        })
                    switch outcome {
                    case .success:
                        channel.finish()
                    case let .failure(error):
                        if let waiting = opened.withLock({ $0.take() }) {
                            waiting.resume(returning: .failure(error))
                        } else {
                            channel.finish(throwing: error)
                        }
                    }
                }
            }
        } onCancel: {
            channel.cancelConsumer()
        }
        return ImageDownload(head: try result.get(), consumer: consumer)
    }

    /// Downloads into `sink`, which runs on the transfer thread (for a consumer that writes to
    /// disk anyway and should not hop through async code). `onHead` runs once before any byte.
    ///
    /// - Parameter retries: resume after transient failures (5xx, resets); false gives up at
    ///   the first, for a quick probe whose answer must not wait.
    public func download(
        imageID: String, range: ClosedRange<UInt64>? = nil, auth: RequestAuth = .service, retries: Bool = true,
        onHead: @escaping @Sendable (DownloadHead) throws -> Void = { _ in },
        sink: @escaping @Sendable (UnsafeRawBufferPointer) throws -> Void
    ) async throws(GlanceError) -> DownloadHead {
        let target = try await resolve(auth)
        let result = await TransferThreads.run { [self] flag in
            let head = Mutex<DownloadHead?>(nil)
            return runDownload(
                imageID: imageID, range: range, target: target, retries: retries, isCancelled: { flag.isCancelled },
                onHead: { h in
                    head.withLock { $0 = h }
                    try onHead(h)
                }, sink: sink
            ).map { head.withLock { $0! } }
        }
        return try result.get()
    }

    /// The download loop, on a transfer thread: request, stream, and resume after transient
    /// failures from the last byte received, until the announced size has arrived.
    func runDownload(
        imageID: String, range: ClosedRange<UInt64>?, target: Target, retries: Bool = true,
        isCancelled: @escaping () -> Bool,
        onHead: @escaping (DownloadHead) throws -> Void,
        sink: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) -> Result<Void, GlanceError> {
        let url = target.endpoint + "/v2/images/\(pathComponent(imageID))/file"
        let state = ResumeState(start: range?.lowerBound ?? 0, end: range.map { $0.upperBound + 1 })
        let handle = pool.take()
        defer { pool.give(handle) }
        var attempt = 0
        while true {
            var request = HTTPRequest(method: "GET", url: url, headers: target.headers)
            if range != nil || state.delivered > 0 {
                request.range = state.end.map { "\(state.next)-\($0 - 1)" } ?? "\(state.next)-"
            }
            let failure: GlanceError
            do throws(TransportFailure) {
                let (head, errorBody) = try CurlTransfer.perform(
                    request, handle: handle, limits: limits, isCancelled: isCancelled,
                    onHead: { head in
                        let parsed = try Self.checkDownloadHead(head, state: state, askedRange: request.range != nil, url: url)
                        if state.first == nil {
                            state.first = parsed
                            try onHead(parsed)
                        }
                    },
                    onBody: { buffer in
                        try sink(buffer)
                        state.next += UInt64(buffer.count)
                        state.delivered += UInt64(buffer.count)
                    })
                if head.status >= 300 {
                    failure = .http(status: head.status, message: GlanceError.message(fromBody: errorBody), method: "GET", url: url)
                } else if let end = state.end, state.next != end {
                    failure = .sizeMismatch(expected: end - (range?.lowerBound ?? 0), received: state.delivered, url: url)
                } else {
                    return .success(())
                }
            } catch {
                failure = glanceError(error, method: "GET", url: url)
            }
            guard retries, failure.isTransient, attempt < configuration.maxRetries, !isCancelled() else {
                return .failure(failure)
            }
            let delay = backoff(attempt: attempt)
            attempt += 1
            logger.warning(
                "download interrupted; resuming",
                metadata: ["url": "\(url)", "error": "\(failure)", "offset": "\(state.next)", "attempt": "\(attempt)"])
            let c = delay.components
            usleep(UInt32(c.seconds * 1_000_000 + c.attoseconds / 1_000_000_000_000))
        }
    }

    /// Validates a 2xx download head against what was asked for, and learns the end offset.
    private static func checkDownloadHead(_ head: HTTPResponseHead, state: ResumeState, askedRange: Bool, url: String) throws -> DownloadHead {
        let length = head.header("Content-Length").flatMap { UInt64($0) }
        var result = DownloadHead(status: head.status, length: length, totalSize: nil, range: nil, contentMD5: head.header("Content-MD5"), headers: head)
        if head.status == 206 {
            guard let value = head.header("Content-Range"), let parsed = parseContentRange(value) else {
                throw GlanceError.invalidResponse(reason: "206 without a valid Content-Range", url: url)
            }
            guard parsed.range.lowerBound == state.next else {
                throw GlanceError.invalidResponse(reason: "asked for bytes from \(state.next), got \(value)", url: url)
            }
            if state.end == nil { state.end = parsed.range.upperBound + 1 }
            result.totalSize = parsed.total
            result.range = parsed.range
        } else {
            if askedRange && state.next != 0 {
                throw GlanceError.invalidResponse(reason: "asked for a range from \(state.next), got the whole image (\(head.status))", url: url)
            }
            if state.end == nil { state.end = length }
            result.totalSize = length
        }
        if let first = state.first {
            // A resumed response describes the rest; keep the first head for the consumer.
            return first
        }
        return result
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
func parseContentRange(_ value: String) -> (range: ClosedRange<UInt64>, total: UInt64?)? {
    let trimmed = value.trimmingCharacters(in: .whitespaces)
    guard trimmed.lowercased().hasPrefix("bytes ") else { return nil }
    let spec = trimmed.dropFirst(6)
    let parts = spec.split(separator: "/", maxSplits: 1)
    guard parts.count == 2 else { return nil }
    let bounds = parts[0].split(separator: "-", maxSplits: 1)
    guard bounds.count == 2, let start = UInt64(bounds[0]), let end = UInt64(bounds[1]), start <= end else { return nil }
    let total = parts[1] == "*" ? nil : UInt64(parts[1])
    if parts[1] != "*" && total == nil { return nil }
    return (start...end, total)
}
