import Synchronization

/// One HTTP exchange on the transfer loop, as async code sees it: how it opened (a head whose
/// body streams, or the whole answer), the response body's stream, and the request body's.
///
/// The loop holds the transfer until it ends; the consumer holds it too, and must `cancel` it
/// when it stops reading early. Nothing here holds the consumer, so a consumer that goes away
/// can always end its transfer (87a95ac: a dropped download used to block for good).
final class Transfer: Sendable {
    enum Opening: Sendable {
        /// A response whose body streams through `body`.
        case streaming(HTTPResponseHead)
        /// The whole exchange: its final head and body (all of it, or the capped body of a
        /// status that is not streamed).
        case complete(HTTPResponseHead, [UInt8])
        case failed(TransportFailure)
    }

    private struct State {
        var opening: Opening?
        var waiter: CheckedContinuation<Opening, Never>?
        /// Feeds `requestBody`; cancelled when the exchange ends.
        var producer: Task<Void, Never>?
        var ended = false
    }

    let id: Int
    /// The response body, for `.stream` handling.
    let body: ByteStream
    /// Where async code sends a `.streamed` request body.
    let requestBody: ByteStream?
    private let loop: TransferLoop
    private let state = Mutex(State())

    init(id: Int, loop: TransferLoop, responseBuffer: Int, requestBuffer: Int?) {
        self.id = id
        self.loop = loop
        body = ByteStream(
            capacity: responseBuffer,
            resumeProducer: { loop.submit(.resume(id: id, .receive)) },
            stopProducer: { loop.submit(.cancel(id: id)) })
        requestBody = requestBuffer.map { ByteStream(capacity: $0, resumeConsumer: { loop.submit(.resume(id: id, .send)) }) }
    }

    /// Waits until the exchange opened: a head to stream from, or its end. Cancelling the
    /// waiting task ends the exchange.
    func opened() async -> Opening {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { s -> Opening? in
                    if s.opening == nil { s.waiter = continuation }
                    return s.opening
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            cancel()
        }
    }

    /// The consumer gives up: the loop removes the exchange (closing its connection when the
    /// body was not read to the end).
    func cancel() {
        body.cancel()
        loop.submit(.cancel(id: id))
    }

    /// Runs `produce` into `requestBody` until it returns or the exchange ends.
    func feedRequestBody(_ produce: @escaping @Sendable (_ emit: @Sendable ([UInt8]) async -> Bool) async throws -> Void) {
        guard let stream = requestBody else { return }
        let task = Task {
            do {
                try await produce { chunk in await stream.send(chunk) }
                stream.finish()
            } catch {
                stream.finish(throwing: error)
            }
        }
        let ended = state.withLock { s in
            s.producer = task
            return s.ended
        }
        if ended { task.cancel() }
    }

    // MARK: From the loop

    /// The first opening wins; later ones change nothing.
    func open(_ opening: Opening) {
        let waiter = state.withLock { s -> CheckedContinuation<Opening, Never>? in
            guard s.opening == nil else { return nil }
            s.opening = opening
            return s.waiter.take()
        }
        waiter?.resume(returning: opening)
    }

    /// The exchange is over: a streamed body ends (with `failure`, if any), and the request
    /// body's producer stops (the backend may have answered before reading all of it).
    func end(failure: TransportFailure?) {
        let producer = state.withLock { s in
            s.ended = true
            return s.producer.take()
        }
        body.finish(throwing: failure)
        requestBody?.cancel()
        producer?.cancel()
    }
}
