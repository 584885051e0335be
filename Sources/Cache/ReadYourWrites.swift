import BlobStore
import Catalog
import Foundation
import Glance
import Logging
import Synchronization

/// Read-your-writes for write-back uploads: Depot never shows a client a state older than
/// what it acknowledged.
///
/// Until a push lands, Glance still shows the image as it was before the upload (`queued`, no
/// size, no hashes). Depot shows it as Glance will once the push lands, with the fields a real
/// Glance 33 sets (measured: `PUT …/file` sets status `active`, size, checksum,
/// `os_hash_algo`/`os_hash_value`, `virtual_size`, `stores` and `updated_at`; `PUT …/stage`
/// sets status `uploading`, size and `updated_at`; a glance-direct import adds
/// `os_glance_importing_to_stores` and `os_glance_failed_import`, both empty). A push that
/// fails for good takes the overlay away: the image is what Glance says again.
extension ImageCache {
    /// Statuses of a record Glance wrote before the data arrived.
    static let statusesBeforeData: Set<String> = ["queued", "saving", "uploading", "importing"]

    /// Whether Depot holds bytes it acknowledged for this image that Glance's record does not
    /// show yet (a pending push, or one done a moment after Glance answered).
    func owesAcknowledgedBytes(cloud: String, image: GlanceImage) -> Bool {
        guard Self.statusesBeforeData.contains(image.status ?? ""), let push = try? catalog.push(cloud: cloud, imageID: image.id) else { return false }
        return push.state == .pending || push.state == .done
    }

    /// Whether `image`, asked of Glance at `askedAt`, may predate the landing of a push of
    /// Depot's: it shows a status from before the data, and a push to `cloud` landed since
    /// (see `Landings`). Such a record is asked for again.
    public func mayPredateLanding(_ image: GlanceImage, cloud: String, askedAt: ContinuousClock.Instant) -> Bool {
        landings.mayPredate(image, cloud: cloud, askedAt: askedAt)
    }

    /// Whether a push of Depot's to `cloud` landed at or after `instant`: an answer Glance gave
    /// before then may not show its data (see `Landings`).
    public func pushLanded(cloud: String, since instant: ContinuousClock.Instant) -> Bool {
        landings.landed(cloud: cloud, since: instant)
    }

    /// Glance's record of an image as `read` gets it, asked for again while it may predate the
    /// landing of a push of Depot's (`mayPredateLanding`); see `Landings.freshRecord`.
    ///
    /// - Throws: what `read` throws.
    public func freshRecord<E: Error>(cloud: String, _ read: () async throws(E) -> GlanceImage) async throws(E) -> GlanceImage {
        try await landings.freshRecord(cloud: cloud, read, check: { (_: GlanceImage) throws(E) in })
    }

    /// The most times one answer is asked for again because it may predate a landing.
    public static var maximumRereadsForLandings: Int { Landings.maximumRereads }

    /// Images of a cloud with bytes Depot acknowledged and still owes Glance (pending or staged
    /// pushes), by id.
    public func owedImages(cloud: String) -> [String: PushRecord] {
        let pushes = (try? catalog.pushes(in: [.pending, .staged])) ?? []
        return Dictionary(pushes.filter { $0.cloud == cloud }.map { ($0.imageID, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// The image as Glance will show it once the bytes Depot acknowledged for it land; the
    /// record unchanged when Depot owes nothing for it (or Glance already shows the data).
    ///
    /// Waits for the upload's SHA-512 and MD5 when they are still being computed (uploads are
    /// acknowledged after SHA-256 alone): a record never shows an upload without its hashes.
    public func asAcknowledged(_ image: GlanceImage, cloud: String) async -> GlanceImage {
        guard Self.statusesBeforeData.contains(image.status ?? ""),
              let push = try? catalog.push(cloud: cloud, imageID: image.id),
              // A push just done still counts: Glance's answer may predate its end.
              push.state == .pending || push.state == .staged || push.state == .done,
              var blob = try? catalog.blob(push.digest)
        else { return image }
        if push.state != .staged, blob.sha512 == nil || blob.md5 == nil {
            guard let complete = try? await digests.complete(push.digest) else { return image }
            blob = complete
        }
        var properties = image.properties
        properties["size"] = .number(Double(blob.size))
        properties["updated_at"] = .string(Self.glanceTimestamp(push.createdAt))
        if push.state == .staged {
            properties["status"] = .string("uploading")
            return GlanceImage(properties: properties)
        }
        properties["status"] = .string("active")
        properties["checksum"] = blob.md5.map(JSONValue.string) ?? .null
        properties["os_hash_algo"] = .string("sha512")
        properties["os_hash_value"] = blob.sha512.map(JSONValue.string) ?? .null
        let mapping = try? catalog.mapping(cloud: cloud, imageID: image.id)
        properties["virtual_size"] = (mapping ?? nil)?.virtualSize.map { .number(Double($0)) } ?? .null
        if let store = await defaultStore(cloud: cloud) { properties["stores"] = .string(store) }
        if push.method == .glanceDirect {
            properties["os_glance_importing_to_stores"] = .string("")
            properties["os_glance_failed_import"] = .string("")
        }
        return GlanceImage(properties: properties)
    }

    /// Glance's own timestamp format (`2026-11-30T11:13:36Z`).
    static func glanceTimestamp(_ seconds: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: seconds.rounded(.down)))
    }

    /// The id of the store Glance puts uploaded data in (`GET /v2/info/stores`, the one marked
    /// default), which Glance names in an image's `stores`; nil when Glance has no stores API
    /// (a single-store Glance sets no `stores`).
    func defaultStore(cloud: String) async -> String? {
        if let known = defaultStores.withLock({ $0[cloud] }) { return known }
        guard let client = clouds[cloud] else { return nil }
        do {
            let store = try await client.defaultStoreID()
            defaultStores.withLock { $0[cloud] = .some(store) }
            return store
        } catch {
            // Not kept: an outage must not become "no stores" for good.
            return nil
        }
    }

    /// Lands the push of an image's acknowledged bytes now, ahead of the queue, before a
    /// request that needs Glance to hold them (an action, a PATCH, a location call).
    ///
    /// Staged bytes are staged in Glance (as `PUT …/stage` would have); an upload's push runs
    /// at once, whatever the queue's concurrency and backoff.
    ///
    /// - Returns: `.landed` (or nothing was owed), `.failed` when the push failed for good
    ///   (Glance's own state then stands), `.timedOut` when `wait` ran out first.
    public func landAcknowledgedBytes(cloud: String, imageID: String, wait: Duration) async -> PushLanding {
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            guard let push = try? catalog.push(cloud: cloud, imageID: imageID) else { return .landed }
            switch push.state {
            case .done: return .landed
            case .failed: return .failed(push.lastError ?? "the push failed")
            case .staged, .pending:
                guard pushes.claim(cloud: cloud, imageID: imageID) else { break }
                // The transfer goes on if the wait runs out: the next request, or the queue,
                // finds it done. The wait polls its end rather than awaiting the task, whose
                // value an expired deadline could not interrupt.
                // It runs as a background job, so shutdown waits for it (or cancels it).
                let finished = TransferEnd()
                let scheduled = background.submit { [pushes] in
                    defer { pushes.unclaim(cloud: cloud, imageID: imageID) }
                    let record: PushRecord? = if push.state == .staged {
                        await pushes.stageInBackend(push) ? push : nil
                    } else {
                        await pushes.attempt(push, auth: .service).push
                    }
                    finished.set(record)
                }
                guard scheduled else {
                    // Depot is shutting down: the queue pushes it at the next start.
                    pushes.unclaim(cloud: cloud, imageID: imageID)
                    return .timedOut
                }
                var result: PushRecord??
                while result == nil, ContinuousClock.now < deadline {
                    result = finished.value
                    if result == nil { try? await Task.sleep(for: .milliseconds(20)) }
                }
                switch result ?? finished.value {
                case .none: return .timedOut
                case .some(nil): break
                case let .some(record?) where record.state == .staged || record.state == .done: return .landed
                case let .some(record?) where record.state == .failed: return .failed(record.lastError ?? "the push failed")
                default: break
                }
            }
            // Running already (or just failed transiently): look again shortly.
            try? await Task.sleep(for: .milliseconds(100))
        }
        return .timedOut
    }

    /// The image was deleted in Glance: Depot owes it nothing any more. A push running now is
    /// told to leave no record; the blob becomes an ordinary cache entry.
    public func cancelOwedBytes(cloud: String, imageID: String) async {
        guard let push = try? catalog.push(cloud: cloud, imageID: imageID), push.state.holdsBlob || push.state == .done else { return }
        await pushes.cancel(push)
        budget.release(push.digest, by: .push(ImageKey(cloud: cloud, imageID: imageID)))
        logger.info("image deleted; its push is cancelled", metadata: ["cloud": "\(cloud)", "image": "\(imageID)", "state": "\(push.state.rawValue)"])
    }
}

/// How an expedited push ended.
public enum PushLanding: Sendable, Equatable {
    case landed
    case failed(String)
    case timedOut
}

/// The end of a landing transfer, set once by the transfer and polled by the waiting request.
private final class TransferEnd: Sendable {
    private let state = Mutex<PushRecord??>(nil)
    /// `nil` while the transfer runs; then its record (`.some(nil)` when it settled nothing).
    var value: PushRecord?? { state.withLock { $0 } }
    func set(_ record: PushRecord?) { state.withLock { $0 = .some(record) } }
}
