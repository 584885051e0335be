/// How long to wait before retrying something that failed: exponential (each failure doubles
/// the step, from `initial` up to `maximum`), with jitter so that many clients failing
/// together do not retry together ("equal jitter": the wait is uniform between
/// `(1 - jitter) × step` and the step).
///
/// Pure: the random source is a parameter, so tests see exact waits.
public struct Backoff: Sendable, Equatable {
    /// The step after the first failure.
    public var initial: Duration
    /// The largest step.
    public var maximum: Duration
    /// The fraction of each step that is random, in 0...1.
    public var jitter: Double

    public init(initial: Duration, maximum: Duration, jitter: Double = 0.5) {
        precondition((0...1).contains(jitter), "jitter is a fraction of the step")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
    }

    /// The step after `failures` failed attempts, before jitter: `initial × 2^(failures-1)`,
    /// at most `maximum` (a count below 1 counts as 1).
    public func step(afterFailures failures: Int) -> Duration {
        var step = initial
        for _ in 1..<max(1, failures) {
            // Doubling stops at the cap, so no count of failures overflows.
            guard step < maximum else { break }
            step = step * 2
        }
        return min(step, maximum)
    }

    /// The wait after `failures` failed attempts, with jitter drawn from `random`.
    public func delay<R: RandomNumberGenerator>(afterFailures failures: Int, using random: inout R) -> Duration {
        // A uniform fraction in [0, 1) from the top 53 bits (a Double's precision).
        let unit = Double(random.next() >> 11) * 0x1p-53
        return step(afterFailures: failures) * (1 - jitter * unit)
    }

    /// The wait after `failures` failed attempts, with the system's random numbers.
    public func delay(afterFailures failures: Int) -> Duration {
        var random = SystemRandomNumberGenerator()
        return delay(afterFailures: failures, using: &random)
    }
}
