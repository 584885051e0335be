import NIOPosix

extension NIOThreadPool {
    /// Runs `body` on one of the pool's threads and returns what it returns or throws.
    ///
    /// Unlike `runIfActive`, cancelling the awaiting task does not drop work that has not
    /// started (a commit or a write half done must finish), and a pool that was already shut down
    /// runs it on the caller's thread rather than failing (only during the process's shutdown).
    package func runBlocking<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            submit { _ in continuation.resume(returning: Result { () throws(E) -> T in try body() }) }
        }
        return try result.get()
    }
}
