import Glibc

/// A bounded queue of byte chunks between a transfer thread and async code.
///
/// Downloads: the transfer thread `put`s (blocking while the queue is full, which stalls the
/// socket read and lets TCP push back on the server) and async code awaits `next`.
/// Uploads: async code `send`s (suspending while full) and the transfer thread `take`s.
/// Memory is bounded by `capacity` plus one chunk, whatever the image size.
public final class ByteChannel: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var chunks: [[UInt8]] = []
    private var head = 0
    private var buffered = 0
    private let capacity: Int
    /// Set once the producer is done: success, or the error the consumer should see.
    private var end: Result<Void, any Error>?
    /// Set when the consumer stops reading; producers give up.
    private var consumerGone = false
    private var waitingConsumer: CheckedContinuation<[UInt8]?, any Error>?
    private var waitingProducer: CheckedContinuation<Bool, Never>?
    /// A partly consumed chunk on the blocking `take` side.
    private var pending: [UInt8] = []
    private var pendingOffset = 0

    public init(capacity: Int) {
        self.capacity = capacity
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    private func lock() { pthread_mutex_lock(&mutex) }
    private func unlock() { pthread_mutex_unlock(&mutex) }

    private func popChunk() -> [UInt8]? {
        guard head < chunks.count else { return nil }
        let chunk = chunks[head]
        chunks[head] = []
        head += 1
        if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        buffered -= chunk.count
        return chunk
    }

    // MARK: Blocking producer → async consumer (downloads)

    /// Queues a copy of `buffer`, blocking while the queue is full. Returns false when the
    /// consumer has gone away (the transfer should stop).
    func put(_ buffer: UnsafeRawBufferPointer) -> Bool {
        lock()
        while buffered >= capacity && !consumerGone {
            pthread_cond_wait(&condition, &mutex)
        }
        if consumerGone {
            unlock()
            return false
        }
        let chunk = Array(buffer)
        if let consumer = waitingConsumer {
            waitingConsumer = nil
            unlock()
            consumer.resume(returning: chunk)
            return true
        }
        chunks.append(chunk)
        buffered += chunk.count
        unlock()
        return true
    }

    /// Ends the stream: the consumer sees the remaining chunks, then nil or `error`.
    public func finish(throwing error: (any Error)? = nil) {
        lock()
        if end == nil { end = error.map { .failure($0) } ?? .success(()) }
        let consumer = head < chunks.count ? nil : waitingConsumer
        if consumer != nil { waitingConsumer = nil }
        let producer = waitingProducer
        waitingProducer = nil
        pthread_cond_broadcast(&condition)
        unlock()
        producer?.resume(returning: false)
        if let consumer {
            switch end! {
            case .success: consumer.resume(returning: nil)
            case let .failure(error): consumer.resume(throwing: error)
            }
        }
    }

    /// The next chunk; nil at the end; throws the producer's error, or CancellationError when
    /// the awaiting task is cancelled.
    public func next() async throws -> [UInt8]? {
        try await withTaskCancellationHandler {
            lock()
            if let chunk = popChunk() {
                pthread_cond_signal(&condition)
                unlock()
                return chunk
            }
            if let end {
                unlock()
                try end.get()
                return nil
            }
            if consumerGone {
                unlock()
                throw CancellationError()
            }
            return try await withCheckedThrowingContinuation { continuation in
                waitingConsumer = continuation
                unlock()
            }
        } onCancel: {
            cancelConsumer()
        }
    }

    /// The consumer stops reading: blocked producers wake up and give up.
    public func cancelConsumer() {
        lock()
        consumerGone = true
        let consumer = waitingConsumer
        waitingConsumer = nil
        pthread_cond_broadcast(&condition)
        unlock()
        consumer?.resume(throwing: CancellationError())
    }

    // MARK: Async producer → blocking consumer (uploads)

    /// Queues a chunk, suspending while the queue is full. Returns false when the consumer
    /// (the upload) has stopped.
    public func send(_ chunk: [UInt8]) async -> Bool {
        lock()
        while buffered >= capacity && !consumerGone && end == nil {
            let proceed = await withCheckedContinuation { continuation in
                waitingProducer = continuation
                unlock()
            }
            lock()
            if !proceed { break }
        }
        if consumerGone || end != nil {
            unlock()
            return false
        }
        chunks.append(chunk)
        buffered += chunk.count
        pthread_cond_signal(&condition)
        unlock()
        return true
    }

    /// Copies up to `buffer.count` queued bytes, blocking until some arrive. Returns 0 at the
    /// end of the stream; throws the producer's error.
    public func take(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        lock()
        defer { unlock() }
        while pendingOffset >= pending.count {
            if let chunk = popChunk() {
                pending = chunk
                pendingOffset = 0
                if let producer = waitingProducer {
                    waitingProducer = nil
                    producer.resume(returning: true)
                }
                continue
            }
            if let end {
                try end.get()
                return 0
            }
            if consumerGone { throw CancellationError() }
            pthread_cond_wait(&condition, &mutex)
        }
        let n = min(buffer.count, pending.count - pendingOffset)
        pending.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + pendingOffset, byteCount: n)
        }
        pendingOffset += n
        return n
    }
}
