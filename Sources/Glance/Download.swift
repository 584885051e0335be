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
/// Memory stays bounded whatever the image size: when the consumer is slow the transfer pauses,
/// and TCP pushes back on the server. A reset mid-body is resumed with a range request
/// transparently, up to the client's retry limit; the consumer sees one continuous stream.
/// Dropping the download (or cancelling the consuming task) stops the transfer.
public struct ImageDownload: AsyncSequence, Sendable {
    public typealias Element = [UInt8]

    public let head: DownloadHead
    let body: DownloadBody

    public struct AsyncIterator: AsyncIteratorProtocol {
        let body: DownloadBody

        public mutating func next() async throws -> [UInt8]? {
            try await body.next(upTo: 0)?.first
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: body) }
}

/// A download's body across the exchanges it takes: reads the current one and, after a
/// transient failure, opens the next at the first byte not yet received.
///
/// Ends its exchange when the last reference goes: a download its reader dropped must not hold
/// a backend connection (and one of Glance's few workers) for good (87a95ac).
final class DownloadBody: Sendable {
    private struct State: Sendable {
        var transfer: Transfer
        /// Nil for a body that is never resumed (a forwarded answer).
        var plan: ResumePlan?
    }

    private let state: Mutex<State>
    /// Nil for a body that is never resumed.
    private let opener: DownloadOpener?
    private let method: String
    private let url: String

    init(transfer: Transfer, method: String, url: String, plan: ResumePlan? = nil, opener: DownloadOpener? = nil) {
        state = Mutex(State(transfer: transfer, plan: plan))
        self.opener = opener
        self.method = method
        self.url = url
    }

    deinit { state.withLock { $0.transfer }.cancel() }

    /// Queued chunks up to `maximum` bytes (at least one, and once `minimum` bytes are queued
    /// unless the exchange ended first); nil at the end.
    ///
    /// - Throws: `GlanceError` once the retries are spent, `.cancelled` when the task is.
    func next(upTo maximum: Int, atLeast minimum: Int = 1) async throws(GlanceError) -> [[UInt8]]? {
        while true {
            let (transfer, plan) = state.withLock { ($0.transfer, $0.plan) }
            var failure: GlanceError
            do {
                if let chunks = try await transfer.body.next(upTo: maximum, atLeast: minimum) {
                    state.withLock { s in s.plan?.received(chunks.reduce(0) { $0 + $1.count }) }
                    return chunks
                }
                guard let shortfall = plan?.shortfall else { return nil }
                failure = shortfall
            } catch let error as TransportFailure {
                failure = GlanceClient.glanceError(error, method: method, url: url)
            } catch {
                throw .cancelled
            }
            guard var plan, let opener else { throw failure }
            let next = try await opener.resume(&plan, after: failure)
            state.withLock { $0 = State(transfer: next, plan: plan) }
        }
    }
}

/// Opens a download's exchanges: the first, and each resume. Written once for both, so a
/// resume checks its head exactly as the first exchange does.
struct DownloadOpener: Sendable {
    let client: GlanceClient
    let headers: [(String, String)]
    /// False gives up at the first failure (a quick probe whose answer must not wait).
    let retries: Bool

    /// Starts the exchange for the plan's next byte and returns once a 2xx head was accepted;
    /// transient failures are retried with backoff while the plan has retries left.
    func open(_ plan: inout ResumePlan) async throws(GlanceError) -> (Transfer, DownloadHead) {
        while true {
            var request = HTTPRequest(method: "GET", url: plan.url, headers: headers)
            request.range = plan.range
            let transfer = client.transfers.start(
                request, limits: client.limits, handling: .stream(allStatuses: false), responseBuffer: client.configuration.downloadBufferBytes)
            let failure: GlanceError
            switch await transfer.opened() {
            case let .streaming(head):
                do throws(GlanceError) {
                    return (transfer, try plan.accept(head))
                } catch {
                    transfer.cancel()
                    failure = error
                }
            case let .complete(head, errorBody):
                failure = .http(status: head.status, message: GlanceError.message(fromBody: errorBody), method: "GET", url: plan.url)
            case let .failed(transport):
                failure = client.glanceError(transport, method: "GET", url: plan.url)
            }
            try await wait(&plan, after: failure)
        }
    }

    /// Opens the exchange that continues the download after `failure` cut the last one.
    func resume(_ plan: inout ResumePlan, after failure: GlanceError) async throws(GlanceError) -> Transfer {
        try await wait(&plan, after: failure)
        client.logger.warning(
            "download interrupted; resuming",
            metadata: ["url": "\(plan.url)", "error": "\(failure)", "offset": "\(plan.next)", "attempt": "\(plan.retries)"])
        return try await open(&plan).0
    }

    /// Sleeps before the next exchange, or throws `failure` when it is final.
    private func wait(_ plan: inout ResumePlan, after failure: GlanceError) async throws(GlanceError) {
        let attempt = plan.retries
        guard retries, !Task.isCancelled, plan.retry(after: failure) else { throw failure }
        do { try await Task.sleep(for: client.backoff(attempt: attempt)) } catch { throw .cancelled }
    }
}

extension GlanceClient {
    /// Opens `GET /v2/images/{id}/file`, optionally for a byte range, and returns once the
    /// response head arrived (errors such as 404 are thrown here).
    public func openDownload(imageID: String, range: ClosedRange<UInt64>? = nil, auth: RequestAuth = .service) async throws(GlanceError) -> ImageDownload {
        let (head, body, _) = try await openBody(imageID: imageID, range: range, auth: auth, retries: true)
        return ImageDownload(head: head, body: body)
    }

    /// Downloads into `sink`, which runs on `blockingPool` (it may write to disk), a batch of
    /// chunks at a time. `onHead` runs once before any byte.
    ///
    /// - Parameters:
    ///   - retries: resume after transient failures (5xx, resets); false gives up at the first,
    ///     for a quick probe whose answer must not wait.
    ///   - batch: asked before each batch: the bytes the sink needs before it makes progress
    ///     (a writer's room left in its slot, say). The batch waits for that many (capped at
    ///     `downloadBufferBytes`; fewer at the end of the body), so a backend that sends slowly
    ///     in small chunks does not cost a hop to `blockingPool` for each. Default 1: every
    ///     chunk as soon as it arrives.
    public func download(
        imageID: String, range: ClosedRange<UInt64>? = nil, auth: RequestAuth = .service, retries: Bool = true,
        onHead: @escaping @Sendable (DownloadHead) throws -> Void = { _ in },
        batch: @escaping @Sendable () -> Int = { 1 },
        sink: @escaping @Sendable (UnsafeRawBufferPointer) throws -> Void
    ) async throws(GlanceError) -> DownloadHead {
        let (head, body, url) = try await openBody(imageID: imageID, range: range, auth: auth, retries: retries)
        do {
            try onHead(head)
            while let chunks = try await body.next(upTo: configuration.downloadBufferBytes, atLeast: batch()) {
                try await blockingPool.runBlocking { for chunk in chunks { try chunk.withUnsafeBytes(sink) } }
            }
        } catch let error as GlanceError {
            throw error
        } catch {
            throw glanceError(.rejected(error), method: "GET", url: url)
        }
        return head
    }

    private func openBody(
        imageID: String, range: ClosedRange<UInt64>?, auth: RequestAuth, retries: Bool
    ) async throws(GlanceError) -> (DownloadHead, DownloadBody, url: String) {
        let target = try await resolve(auth)
        let url = target.endpoint + "/v2/images/\(pathComponent(imageID))/file"
        let opener = DownloadOpener(client: self, headers: target.headers, retries: retries)
        var plan = ResumePlan(url: url, range: range, maxRetries: configuration.maxRetries)
        let (transfer, head) = try await opener.open(&plan)
        return (head, DownloadBody(transfer: transfer, method: "GET", url: url, plan: plan, opener: opener), url)
    }
}
