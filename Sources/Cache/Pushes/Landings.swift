import Glance
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

    /// The most times one answer is asked for again because it may predate a landing.
    static let maximumRereads = 3

    /// Whether `image`, asked of Glance at `askedAt`, may predate a landing: it shows a status
    /// from before the data, and a push to `cloud` landed since.
    func mayPredate(_ image: GlanceImage, cloud: String, askedAt: ContinuousClock.Instant) -> Bool {
        ImageCache.statusesBeforeData.contains(image.status ?? "") && landed(cloud: cloud, since: askedAt)
    }

    /// Glance's record of an image as `read` gets it, asked for again (at most
    /// `maximumRereads` times) while it may predate a landing (`mayPredate`).
    ///
    /// `check` sees every record before that question: what it decides from Depot's own state
    /// (a refusal it throws) is decided with the record that stands, and a landing between the
    /// two still sends the record back to Glance.
    ///
    /// - Throws: what `read` or `check` throws.
    func freshRecord<E: Error>(
        cloud: String, _ read: () async throws(E) -> GlanceImage, check: (GlanceImage) throws(E) -> Void
    ) async throws(E) -> GlanceImage {
        var askedAt = ContinuousClock.now
        var image = try await read()
        try check(image)
        var rereads = 0
        while rereads < Self.maximumRereads, mayPredate(image, cloud: cloud, askedAt: askedAt) {
            rereads += 1
            askedAt = ContinuousClock.now
            image = try await read()
            try check(image)
        }
        return image
    }
}
