/// The state of a bounded queue of byte chunks between one producer and one consumer, as a
/// value: events in, actions out. `ByteStream` keeps it behind a lock and carries the actions
/// out (resuming a suspended task, or asking the transfer loop to unpause a transfer).
///
/// Either side may be async code or a libcurl callback on the transfer loop. A side that cannot
/// go on *waits*: a task suspends, a transfer pauses (`CURL_WRITEFUNC_PAUSE`,
/// `CURL_READFUNC_PAUSE`). The other side's event that lets it go on returns `wakeProducer` or
/// `wakeConsumer`. Memory is bounded by `capacity` plus one chunk.
struct ByteFlow {
    enum State: Equatable {
        /// The producer may add chunks.
        case running
        /// The queue was full when the producer offered a chunk: it waits until the consumer has
        /// drained the queue to `resumeBelow`.
        case pausedByConsumer
        /// The producer ended (`failure` says how); the consumer drains what is queued, then
        /// sees the end.
        case finished
        /// The consumer went away; queued bytes are dropped and the producer stops.
        case cancelled
    }

    enum Offer: Equatable {
        case accepted(wakeConsumer: Bool)
        /// Not taken: the producer waits and offers the same chunk again when woken.
        case full
        /// The consumer went away (or the producer already finished): stop producing.
        case refused
    }

    /// What the consumer finds when nothing is queued.
    enum Idle {
        /// Nothing queued yet: the consumer waits until woken.
        case wait
        case end
        case failed(any Error)
        case cancelled
    }

    enum Take {
        case chunks([[UInt8]], wakeProducer: Bool)
        case idle(Idle)
    }

    enum Read {
        case bytes(Int, wakeProducer: Bool)
        case idle(Idle)
    }

    private(set) var state = State.running
    /// The consumer found too few bytes queued and waits for the producer.
    private(set) var consumerWaiting = false
    /// Queued bytes at which a waiting consumer is woken (what its last `take` asked for at
    /// least, never above `capacity`): a consumer that makes progress only per so many bytes
    /// is not woken, and its task not scheduled, for every chunk of a slow transfer.
    private(set) var wakeAt = 1
    /// Why the producer ended, when it failed.
    private(set) var failure: (any Error)?
    private(set) var buffered = 0
    let capacity: Int
    /// A paused producer resumes once the queue holds no more than this: with some hysteresis a
    /// paused transfer is not woken (a message to the loop) for every chunk taken.
    let resumeBelow: Int

    private var chunks: [[UInt8]] = []
    private var head = 0
    /// Bytes of `chunks[head]` already read by `read(into:)`.
    private var offset = 0

    init(capacity: Int) {
        precondition(capacity > 0, "a flow needs room for at least one byte")
        self.capacity = capacity
        resumeBelow = capacity / 2
    }

    var isEmpty: Bool { head == chunks.count }

    // MARK: Producer

    mutating func offer(_ chunk: [UInt8]) -> Offer {
        switch state {
        case .running:
            guard buffered < capacity else {
                state = .pausedByConsumer
                return .full
            }
            chunks.append(chunk)
            buffered += chunk.count
            let wake = consumerWaiting && buffered >= wakeAt
            if wake { consumerWaiting = false }
            return .accepted(wakeConsumer: wake)
        case .pausedByConsumer:
            return .full
        case .finished, .cancelled:
            return .refused
        }
    }

    /// The producer ends, with `failure` or cleanly. A later finish changes nothing.
    mutating func finish(failure: (any Error)?) -> (wakeConsumer: Bool, wakeProducer: Bool) {
        switch state {
        case .running, .pausedByConsumer:
            let wasPaused = state == .pausedByConsumer
            state = .finished
            self.failure = failure
            let wake = consumerWaiting
            consumerWaiting = false
            return (wake, wasPaused)
        case .finished, .cancelled:
            return (false, false)
        }
    }

    // MARK: Consumer

    /// Whole chunks, at least one and then more while they fit in `maximum` bytes.
    ///
    /// With `minimum`, a running producer's chunks are taken only once at least that many
    /// bytes are queued (capped at `capacity`, which a paused producer has reached); until then
    /// the consumer waits, and the offer that brings the queue there wakes it. A finished
    /// producer's last bytes are taken however few.
    mutating func take(upTo maximum: Int = .max, atLeast minimum: Int = 1) -> Take {
        guard isReady(atLeast: minimum), !isEmpty else { return .idle(idle(wakingAt: minimum)) }
        var taken: [[UInt8]] = []
        var bytes = 0
        while !isEmpty, taken.isEmpty || bytes + chunks[head].count - offset <= maximum {
            var chunk = pop()
            if offset > 0 {
                chunk.removeFirst(offset)
                offset = 0
            }
            bytes += chunk.count
            taken.append(chunk)
        }
        buffered -= bytes
        return .chunks(taken, wakeProducer: drained())
    }

    /// Whether `take(atLeast: minimum)` would answer without waiting: enough bytes queued, or
    /// the producer paused (the queue is full), ended or cut off.
    func isReady(atLeast minimum: Int = 1) -> Bool {
        switch state {
        case .running: !isEmpty && buffered >= Self.wanted(minimum, capacity: capacity)
        case .pausedByConsumer: !isEmpty
        case .finished, .cancelled: true
        }
    }

    private static func wanted(_ minimum: Int, capacity: Int) -> Int { min(max(minimum, 1), capacity) }

    /// Copies up to `buffer.count` queued bytes, splitting a chunk where the buffer ends (for
    /// libcurl's read callback, which offers a buffer of its own size).
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Read {
        guard isEmpty || buffer.count == 0 else {
            var copied = 0
            while copied < buffer.count, !isEmpty {
                let n = chunks[head].withUnsafeBytes { source in
                    let n = min(buffer.count - copied, source.count - offset)
                    buffer.baseAddress!.advanced(by: copied).copyMemory(from: source.baseAddress! + offset, byteCount: n)
                    return n
                }
                copied += n
                offset += n
                if offset == chunks[head].count {
                    _ = pop()
                    offset = 0
                }
            }
            buffered -= copied
            return .bytes(copied, wakeProducer: drained())
        }
        return .idle(idle(wakingAt: 1))
    }

    /// With too few bytes queued: the end, or a wait for the producer until `minimum` bytes are.
    private mutating func idle(wakingAt minimum: Int) -> Idle {
        switch state {
        case .finished: return failure.map { .failed($0) } ?? .end
        case .cancelled: return .cancelled
        case .running, .pausedByConsumer:
            consumerWaiting = true
            wakeAt = Self.wanted(minimum, capacity: capacity)
            return .wait
        }
    }

    /// The consumer goes away. Returns whether the producer was still going (it must be told
    /// to stop) and whether it waits (it must be woken to learn it).
    mutating func cancel() -> (producerWasActive: Bool, wakeProducer: Bool, wakeConsumer: Bool) {
        let before = state
        guard before != .cancelled else { return (false, false, false) }
        state = .cancelled
        chunks = []
        head = 0
        offset = 0
        buffered = 0
        let wake = consumerWaiting
        consumerWaiting = false
        return (before != .finished, before == .pausedByConsumer, wake)
    }

    // MARK: Queue

    private mutating func pop() -> [UInt8] {
        let chunk = chunks[head]
        chunks[head] = []
        head += 1
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        return chunk
    }

    /// After bytes left the queue: wakes a paused producer once there is room again.
    private mutating func drained() -> Bool {
        guard state == .pausedByConsumer, buffered <= resumeBelow else { return false }
        state = .running
        return true
    }
}
