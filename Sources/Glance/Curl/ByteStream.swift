import Synchronization

/// A bounded stream of byte chunks from one producer to one consumer: a `ByteFlow` behind a
/// lock, with the waiting side resumed when the other lets it go on.
///
/// Async sides suspend (`send`, `next`); a transfer on the loop never blocks: it offers or reads
/// and pauses when it cannot go on, and the hooks given at init ask the loop to unpause it.
/// Memory is bounded by `capacity` plus one chunk, whatever the body's size.
public final class ByteStream: Sendable {
    private struct Waiters {
        var flow: ByteFlow
        var consumer: CheckedContinuation<Void, Never>?
        var producer: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<Waiters>
    /// Unpauses a transfer that produces (a download paused on a full queue).
    private let resumeProducer: @Sendable () -> Void
    /// Unpauses a transfer that consumes (an upload paused for want of bytes).
    private let resumeConsumer: @Sendable () -> Void
    /// Stops a producing transfer whose consumer went away.
    private let stopProducer: @Sendable () -> Void

    /// - Parameters:
    ///   - capacity: bytes queued before the producer waits.
    ///   - resumeProducer, resumeConsumer, stopProducer: what to do for a side that is a
    ///     transfer on the loop; nothing for async sides.
    public init(
        capacity: Int, resumeProducer: @escaping @Sendable () -> Void = {}, resumeConsumer: @escaping @Sendable () -> Void = {},
        stopProducer: @escaping @Sendable () -> Void = {}
    ) {
        state = Mutex(Waiters(flow: ByteFlow(capacity: capacity)))
        self.resumeProducer = resumeProducer
        self.resumeConsumer = resumeConsumer
        self.stopProducer = stopProducer
    }

    // MARK: Producer

    /// Queues a chunk without waiting (for a transfer's write callback): `.full` means the
    /// transfer must pause; it is unpaused through `resumeProducer` once there is room.
    func offer(_ chunk: [UInt8]) -> ByteFlow.Offer {
        let (offer, consumer) = state.withLock { s in
            let offer = s.flow.offer(chunk)
            return (offer, offer == .accepted(wakeConsumer: true) ? s.consumer.take() : nil)
        }
        if offer == .accepted(wakeConsumer: true) { wake(consumer, or: resumeConsumer) }
        return offer
    }

    /// Queues a chunk, suspending while the queue is full. Returns false once the consumer has
    /// gone away (or the stream was finished).
    public func send(_ chunk: [UInt8]) async -> Bool {
        while true {
            switch offer(chunk) {
            case .accepted: return true
            case .refused: return false
            case .full:
                await withCheckedContinuation { continuation in
                    state.withLock { s in
                        // Room may have appeared between the offer and now.
                        if s.flow.state == .pausedByConsumer { s.producer = continuation } else { continuation.resume() }
                    }
                }
            }
        }
    }

    /// Ends the stream: the consumer sees the queued chunks, then the end or `error`.
    public func finish(throwing error: (any Error)? = nil) {
        let (wakes, consumer, producer) = state.withLock { s in
            let wakes = s.flow.finish(failure: error)
            return (wakes, wakes.wakeConsumer ? s.consumer.take() : nil, s.producer.take())
        }
        if wakes.wakeConsumer { wake(consumer, or: resumeConsumer) }
        producer?.resume()
    }

    // MARK: Consumer

    /// The next chunk; nil at the end. Throws the producer's error, or `CancellationError` once
    /// the consumer went away (or its task was cancelled).
    public func next() async throws -> [UInt8]? {
        guard let chunks = try await next(upTo: 0) else { return nil }
        return chunks.count == 1 ? chunks[0] : chunks.flatMap { $0 }
    }

    /// Every queued chunk that fits in `maximum` bytes (at least one), waiting while fewer than
    /// `minimum` bytes are queued; nil at the end.
    /// - Parameter minimum: bytes to wait for before taking any (fewer at the end of the
    ///   stream; capped at the capacity): a consumer that makes progress only per so many bytes
    ///   is resumed once for them, not for every chunk. 1: any chunk, as soon as it is queued.
    public func next(upTo maximum: Int, atLeast minimum: Int = 1) async throws -> [[UInt8]]? {
        try await withTaskCancellationHandler {
            while true {
                var taken = takeNow(upTo: maximum, atLeast: minimum)
                if taken == nil {
                    await withCheckedContinuation { continuation in
                        state.withLock { s in
                            taken = s.flow.take(upTo: maximum, atLeast: minimum)
                            if case .idle(.wait) = taken! { s.consumer = continuation } else { continuation.resume() }
                        }
                    }
                }
                switch taken! {
                case let .chunks(chunks, wakeProducer):
                    if wakeProducer { wakeWaitingProducer() }
                    return chunks
                case .idle(.wait): continue
                case .idle(.end): return nil
                case let .idle(.failed(error)): throw error
                case .idle(.cancelled): throw CancellationError()
                }
            }
        } onCancel: {
            cancel()
        }
    }

    /// A take that does not wait; nil when the consumer would have to.
    private func takeNow(upTo maximum: Int, atLeast minimum: Int) -> ByteFlow.Take? {
        state.withLock { s in
            guard s.flow.isReady(atLeast: minimum) else { return nil }
            return s.flow.take(upTo: maximum, atLeast: minimum)
        }
    }

    /// Copies queued bytes without waiting (for a transfer's read callback): `.idle(.wait)` means the
    /// transfer must pause; it is unpaused through `resumeConsumer` once bytes arrive.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> ByteFlow.Read {
        let read = state.withLock { $0.flow.read(into: buffer) }
        if case .bytes(_, true) = read { wakeWaitingProducer() }
        return read
    }

    /// The consumer goes away: queued bytes are dropped, a waiting producer learns it, and a
    /// producing transfer is stopped.
    public func cancel() {
        let (change, consumer, producer) = state.withLock { s in
            let change = s.flow.cancel()
            return (change, s.consumer.take(), s.producer.take())
        }
        consumer?.resume()
        producer?.resume()
        if change.producerWasActive { stopProducer() }
    }

    private func wakeWaitingProducer() {
        let producer = state.withLock { $0.producer.take() }
        wake(producer, or: resumeProducer)
    }

    private func wake(_ continuation: CheckedContinuation<Void, Never>?, or resume: @Sendable () -> Void) {
        if let continuation { continuation.resume() } else { resume() }
    }
}
