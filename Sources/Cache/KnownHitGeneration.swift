import Synchronization

/// Counts changes to what `ImageCache.knownHit` reads (the authorizer's decisions, the blob
/// resolver's mappings), so that a caller who kept one of its answers can tell, with one
/// atomic load, that nothing it rests on has changed since (`KnownHitValidity`).
///
/// A writer changes its table first and advances the count after; a reader loads the count
/// before it reads the tables. A reader that missed a change then holds a count older than the
/// one the change left, so its answer is never taken as still valid.
final class KnownHitGeneration: Sendable {
    private let count = Atomic<UInt64>(0)

    init() {}

    /// After a change to a table `knownHit` reads.
    func advance() { count.wrappingAdd(1, ordering: .releasing) }

    /// Before reading those tables.
    var current: UInt64 { count.load(ordering: .acquiring) }
}
