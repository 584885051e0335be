import Dispatch
import Synchronization

/// Hashes a writer's bytes on one serial lane per digest, beside the writer's own copy and
/// disk write instead of between them.
///
/// Bytes are copied into staging slots (`slotBytes` each, at most `slotCount`, allocated as
/// needed). A full slot goes to every lane at once; it is free again when the last lane has
/// hashed it. The caller waits only when every slot is still being hashed, so the slowest hash
/// runs without pause while the caller stages and writes the next slot. The writer used to
/// hash and write each batch in parallel but wait for all of it before taking the next, so its
/// hashes stood still while it copied; a 256 MiB cold fill on 2 cores went from 0.49–0.56 s
/// to 0.41–0.47 s.
///
/// Used by one thread at a time (its writer's); the lanes touch only their hasher, the slot
/// they were handed and `state`. They run on `HashPool`'s threads: one item per lane per slot,
/// never blocking.
final class HashLanes: @unchecked Sendable {
    static let slotBytes = 1 << 20
    /// Two: one being hashed while the writer fills the other. Every running fill and upload
    /// holds up to this many slots, so it bounds their memory (`limits.max_fills` 32 fills:
    /// 64 MiB at most).
    static let slotCount = 2

    let hashers: [DigestHasher]
    private let lanes: [HashLane]
    private let drained = DispatchGroup()
    /// Per slot, lanes still hashing it; allocated slots that are free; whether the writer
    /// waits for one.
    private let state = Mutex<(pending: [Int], free: [Int], allocated: Int, writerWaits: Bool)>(
        (Array(repeating: 0, count: slotCount), [], 0, false))
    /// Wakes a writer waiting for a slot. Starts and ends at 0: libdispatch traps when a
    /// semaphore is released below its initial value, as a writer dropped mid-slot would leave
    /// a counting one.
    private let slotFreed = DispatchSemaphore(value: 0)
    private var slots: [UnsafeMutableRawBufferPointer] = []
    /// The slot being filled and how many bytes it holds.
    private var current: (index: Int, count: Int)?

    init(hashers: [DigestHasher]) {
        self.hashers = hashers
        lanes = hashers.map { _ in HashLane() }
    }

    // Each lane's work item holds the lanes, so none is left running here.
    deinit { for slot in slots { slot.deallocate() } }

    /// Copies `buffer` in; `full` runs with each slot once it is full and its hashing started
    /// (the slot stays readable until `full` returns).
    func append(_ buffer: UnsafeRawBufferPointer, full: (UnsafeRawBufferPointer) throws(BlobStoreError) -> Void) throws(BlobStoreError) {
        var offset = 0
        while offset < buffer.count {
            let (index, count) = current ?? (takeSlot(), 0)
            let n = min(Self.slotBytes - count, buffer.count - offset)
            UnsafeMutableRawBufferPointer(rebasing: slots[index][count..<(count + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)]))
            offset += n
            current = (index, count + n)
            if count + n == Self.slotBytes { try submitCurrent(full) }
        }
    }

    /// Bytes `append` must still take before the slot being filled is full (a whole slot when
    /// none is being filled).
    var roomInSlot: Int { Self.slotBytes - (current?.count ?? 0) }

    /// Hands a partly filled slot on as if full (at the end of the bytes).
    func flush(_ full: (UnsafeRawBufferPointer) throws(BlobStoreError) -> Void) throws(BlobStoreError) {
        if let current, current.count > 0 { try submitCurrent(full) }
    }

    /// Waits for every lane, then ends each hash.
    func finish() -> [DigestAlgorithm: Digest] {
        drained.wait()
        var digests: [DigestAlgorithm: Digest] = [:]
        for hasher in hashers { digests[hasher.algorithm] = hasher.finish() }
        return digests
    }

    private func submitCurrent(_ full: (UnsafeRawBufferPointer) throws(BlobStoreError) -> Void) throws(BlobStoreError) {
        guard let (index, count) = current else { return }
        current = nil
        let bytes = UnsafeSendable(UnsafeRawBufferPointer(rebasing: slots[index][..<count]))
        state.withLock { $0.pending[index] = hashers.count }
        for (lane, hasher) in zip(lanes, hashers) {
            let hasher = UnsafeSendable(hasher)
            drained.enter()
            lane.submit {
                hasher.value.update(bytes.value)
                self.hashed(slot: index)
            }
        }
        try full(bytes.value)
    }

    private func hashed(slot index: Int) {
        let wake = state.withLock { s in
            s.pending[index] -= 1
            guard s.pending[index] == 0 else { return false }
            s.free.append(index)
            defer { s.writerWaits = false }
            return s.writerWaits
        }
        if wake { slotFreed.signal() }
        drained.leave()
    }

    private func takeSlot() -> Int {
        while true {
            enum Next { case reuse(Int), allocate, wait }
            let next = state.withLock { s -> Next in
                if let index = s.free.popLast() { return .reuse(index) }
                if s.allocated < Self.slotCount {
                    s.allocated += 1
                    return .allocate
                }
                s.writerWaits = true
                return .wait
            }
            switch next {
            case let .reuse(index): return index
            case .allocate:
                slots.append(.allocate(byteCount: Self.slotBytes, alignment: 64))
                return slots.count - 1
            case .wait: slotFreed.wait()
            }
        }
    }
}
