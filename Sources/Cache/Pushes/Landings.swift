import Synchronization

/// When a push of Depot's last landed in each cloud: what tells a reader that Glance's answer
/// may predate a landing.
///
/// A push's blob may be evicted the moment the push is done, and the Catalog's rows for the
/// image go with it (they reference the blob), so Depot no longer knows it owed that image
/// anything. A record Glance gave before the landing still shows the image without data
/// (`queued`, `saving`…): read then, used after, it would answer "no data" for bytes Depot
/// acknowledged. Readers note when they asked and ask again when a push to the same cloud
/// landed since. Kept in memory only: no request outlives the process.
final class Landings: Sendable {
    private let last = Mutex<[String: ContinuousClock.Instant]>([:])

    /// Notes that a push to `cloud` landed now. Called before its blob may be evicted.
    func record(cloud: String) {
        let now = ContinuousClock.now
        last.withLock { $0[cloud] = now }
    }

    /// Whether a push to `cloud` landed at or after `instant`.
    func landed(cloud: String, since instant: ContinuousClock.Instant) -> Bool {
        guard let landing = last.withLock({ $0[cloud] }) else { return false }
        return landing >= instant
    }
}
