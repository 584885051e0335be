import Foundation
import Synchronization

/// Runs blocking work (libcurl transfers, fsyncs) on threads of its own.
///
/// A blocking `curl_easy_perform` on Swift's cooperative pool starves every other task (measured
/// here: 8 throttled downloads took 3.25 s in a TaskGroup and 0.83 s on 8 threads), so each
/// transfer gets a dedicated thread for its lifetime and the caller awaits the result.
public enum TransferThreads {
    /// Runs `body` on a new thread; cancelling the awaiting task sets the flag `body` polls.
    public static func run<T: Sendable>(_ body: @escaping @Sendable (CancellationFlag) -> T) async -> T {
        let flag = CancellationFlag()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                detach { continuation.resume(returning: body(flag)) }
            }
        } onCancel: {
            flag.cancel()
        }
    }

    /// Starts `body` on a new thread and returns at once.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = "depot-transfer"
        // Transfers are shallow: 512 KiB of stack is plenty and keeps 100s of them cheap.
        thread.stackSize = 512 * 1024
        thread.start()
    }
}

/// A flag a transfer thread polls to learn that its caller gave up.
public final class CancellationFlag: Sendable {
    private let state = Atomic<Bool>(false)

    public var isCancelled: Bool { state.load(ordering: .acquiring) }

    public func cancel() { state.store(true, ordering: .releasing) }
}
