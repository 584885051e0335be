/// When to evict and how much: a byte budget with high and low watermarks.
///
/// Crossing the high mark (now, or with a reservation about to be written) triggers eviction
/// down to the low mark, so evictions come in batches instead of one per fill.
public struct Watermarks: Sendable, Equatable {
    public var budget: UInt64
    public var high: Double
    public var low: Double

    public init(budget: UInt64, high: Double = 0.95, low: Double = 0.85) {
        precondition(0 < low && low <= high && high <= 1, "watermarks need 0 < low <= high <= 1")
        self.budget = budget
        self.high = high
        self.low = low
    }

    /// Bytes to free before `incoming` more bytes may be written when `used` are in use; 0 when
    /// the high mark is not crossed.
    public func bytesToFree(used: UInt64, incoming: UInt64 = 0) -> UInt64 {
        let after = used + incoming
        guard Double(after) > Double(budget) * high else { return 0 }
        let target = UInt64(Double(budget) * low)
        return after > target ? after - target : 0
    }

    /// Whether `incoming` bytes can fit at all, after freeing everything evictable.
    public func fits(incoming: UInt64, unevictable: UInt64) -> Bool {
        unevictable + incoming <= budget
    }
}
