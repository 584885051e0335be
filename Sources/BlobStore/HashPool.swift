import CFileIO
import Dispatch
import Glibc
import Synchronization

/// The threads that run hash lanes: one per core, started on first use and kept for the
/// process.
///
/// Not libdispatch's global pool, which Swift concurrency's tasks share on Linux: a lane holds
/// a thread for about a millisecond per slot (SHA-512 of 1 MiB), a millisecond in which no task
/// could run there. The pool's size bounds the threads that hash, however many writers there
/// are.
final class HashPool: @unchecked Sendable {
    static let shared = HashPool(threads: max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// Lanes with work, in the order they asked; a lane is in here at most once.
    private let ready = Mutex<[HashLane]>([])
    /// Counts `ready`'s lanes.
    private let wake = DispatchSemaphore(value: 0)

    private init(threads: Int) {
        for _ in 0..<threads {
            var thread = pthread_t()
            let pool = Unmanaged.passRetained(self).toOpaque()
            let rc = pthread_create(&thread, nil, { pool in
                _ = depot_name_thread("depot-hash")
                Unmanaged<HashPool>.fromOpaque(pool!).takeRetainedValue().work()
                return nil
            }, pool)
            precondition(rc == 0, "pthread_create for a hash thread failed: \(rc)")
            pthread_detach(thread)
        }
    }

    func schedule(_ lane: HashLane) {
        ready.withLock { $0.append(lane) }
        wake.signal()
    }

    /// Runs lanes until the process ends.
    private func work() {
        while true {
            wake.wait()
            let lane = ready.withLock { $0.removeFirst() }
            // One item per turn, so that many writers share the threads slot by slot.
            if lane.runOne() { schedule(lane) }
        }
    }
}

/// A serial lane on `HashPool`: its items run one at a time, in the order submitted.
final class HashLane: @unchecked Sendable {
    private let state = Mutex<(items: [@Sendable () -> Void], scheduled: Bool)>(([], false))

    func submit(_ item: @escaping @Sendable () -> Void) {
        let schedule = state.withLock { s in
            s.items.append(item)
            defer { s.scheduled = true }
            return !s.scheduled
        }
        if schedule { HashPool.shared.schedule(self) }
    }

    /// Runs the next item; true when more are waiting (the lane stays scheduled).
    fileprivate func runOne() -> Bool {
        let item = state.withLock { $0.items.removeFirst() }
        item()
        return state.withLock { s in
            if s.items.isEmpty { s.scheduled = false }
            return s.scheduled
        }
    }
}
