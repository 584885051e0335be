import Synchronization

/// A count of things running at once with a ceiling: taking a slot fails, instead of
/// waiting, once `limit` are taken.
public final class ConcurrencyLimit: Sendable {
    public let limit: Int
    private let taken = Atomic<Int>(0)

    public init(_ limit: Int) { self.limit = limit }

    /// Takes a slot; false when all are taken. Pair a true answer with `release`.
    public func tryAcquire() -> Bool {
        var current = taken.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = taken.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    public func release() {
        taken.subtract(1, ordering: .acquiringAndReleasing)
    }

    /// Slots taken now.
    public var inUse: Int { taken.load(ordering: .relaxed) }
}
