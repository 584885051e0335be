import Glance
import NIOCore
import NIOPosix
import Synchronization

/// The application's bounded thread pools for blocking disk work, so that neither Swift's
/// cooperative pool nor the transfer loop ever waits on the disk, and the process's thread
/// count does not grow with the work.
///
/// `depot serve` makes one at start and shuts it down at stop; tools and tests that run no
/// server use `shared`.
public final class DiskPools: Sendable {
    /// Work a request waits for: fills' writes and hashing, commits and their fsyncs, uploads'
    /// writes, reads of stored blobs, the Catalog's writes (each syncs the WAL and may wait
    /// seconds for another writer's lock).
    public let requests: NIOThreadPool
    /// Work nobody waits for: digests computed after an upload's answer, the scrub, and their
    /// Catalog writes. Its own threads, which that work lowers to nice 10
    /// (`BlobReader.computeDigestInBackground`) and leaves there (an unprivileged process
    /// cannot raise it back), so it never competes with requests for a core or a thread.
    public let background: NIOThreadPool
    /// Eviction's removals (the Catalog rows, the unlink and its directory fsync). Its own
    /// thread: an upload's commit on `requests` may block until an eviction of the same blob
    /// ends (`UploadHold`), so the eviction must never queue behind it.
    public let evictions: NIOThreadPool

    /// Threads for request work: hashing is CPU-bound, fsync waits; a few more than cores.
    public static var defaultRequestThreads: Int { max(4, System.coreCount) }

    /// Makes the pools; `start` starts their threads.
    public init(requestThreads: Int = DiskPools.defaultRequestThreads, backgroundThreads: Int = 2) {
        requests = NIOThreadPool(numberOfThreads: requestThreads)
        background = NIOThreadPool(numberOfThreads: backgroundThreads)
        evictions = NIOThreadPool(numberOfThreads: 1)
    }

    public func start() {
        requests.start()
        background.start()
        evictions.start()
    }

    /// Lets queued work finish, then stops the threads.
    public func shutdown() async {
        try? await requests.shutdownGracefully()
        try? await background.shutdownGracefully()
        try? await evictions.shutdownGracefully()
    }

    /// Started at first use and never shut down, for tools and tests.
    public static let shared: DiskPools = {
        let pools = DiskPools()
        pools.start()
        return pools
    }()

    /// Runs request work on `requests`; returns what it returns or throws.
    public func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        try await requests.runBlocking(body)
    }

    /// Runs work nobody waits for on `background`.
    public func runInBackground<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        try await background.runBlocking(body)
    }

    /// Runs eviction's removals on `evictions`.
    public func runEviction<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await evictions.runBlocking(body)
    }

    /// Runs long background work that polls `flag` to stop early once the awaiting task is
    /// cancelled (the scrub's rate-limited pass, at shutdown).
    public func runInBackground<T: Sendable>(cancellable body: @escaping @Sendable (CancellationFlag) -> T) async -> T {
        let flag = CancellationFlag()
        return await withTaskCancellationHandler {
            await background.runBlocking { body(flag) }
        } onCancel: {
            flag.cancel()
        }
    }
}

/// A flag blocking work polls to learn that its caller gave up.
public final class CancellationFlag: Sendable {
    private let state = Atomic<Bool>(false)

    public var isCancelled: Bool { state.load(ordering: .acquiring) }

    public func cancel() { state.store(true, ordering: .releasing) }
}
