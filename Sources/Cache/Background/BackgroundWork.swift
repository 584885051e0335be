/// The cache's own background work: fills (with the digest pass after one), and the hit flush.
///
/// Each job runs as a child task of `run()`, which the application runs as a service (`depot
/// serve` in its ServiceGroup, the tests in their scope): no work the cache starts outlives it,
/// and cancelling `run()` cancels every job. Jobs submitted before `run()` starts wait for it;
/// once it has ended they are refused.
public final class BackgroundWork: Sendable {
    typealias Job = @Sendable () async -> Void

    private let jobs: AsyncStream<Job>
    private let intake: AsyncStream<Job>.Continuation

    init() { (jobs, intake) = AsyncStream.makeStream() }

    /// Queues a job.
    ///
    /// - Returns: false when `run()` has ended: the job will not run, the caller cleans up.
    @discardableResult
    func submit(_ job: @escaping Job) -> Bool {
        if case .enqueued = intake.yield(job) { return true }
        return false
    }

    /// Runs the jobs until cancelled; returns once every running job has ended.
    public func run() async {
        await withDiscardingTaskGroup { group in
            // The stream ends when this task is cancelled; the group cancels its jobs then.
            for await job in jobs { group.addTask { await job() } }
        }
        intake.finish()
    }
}
