import BlobStore
import Catalog
import Foundation
import Synchronization
import Glance

/// Why an upload cannot be taken.
public enum UploadError: Error, CustomStringConvertible, Sendable {
    /// The backend refused the caller or the image (401, 403, 404, 409…), passed on.
    case refused(status: Int, message: String)
    /// The body is larger than `max_upload_size`.
    case tooLarge(size: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case let .refused(_, message): message
        case let .tooLarge(size, limit):
            "the image is \(size) bytes and this Depot takes at most \(limit) bytes per upload (max_upload_size)"
        }
    }
}

/// An image that is about to receive data through Depot, as the caller may upload it.
public struct UploadTarget: Sendable {
    public let cloud: String
    public let image: GlanceImage
    public let method: PushRecord.Method

    public init(cloud: String, image: GlanceImage, method: PushRecord.Method) {
        self.cloud = cloud
        self.image = image
        self.method = method
    }
}

extension ImageCache {
    /// Checks with the backend, with the caller's own token, that the caller may put data into
    /// an image, and that the image can take data.
    ///
    /// Glance has no dry-run upload, so Depot asks it to remove a property no image has: Glance
    /// checks `modify_image` (whose default rule is the same as `upload_image`'s) and answers
    /// 409 "does not exist" to a caller who may, 403 to one who may not, and changes nothing.
    public func authorizeUpload(token: String?, cloud: String, imageID: String, method: PushRecord.Method) async throws -> UploadTarget {
        let client = try client(for: cloud)
        guard let token, !token.isEmpty else {
            throw UploadError.refused(status: 401, message: "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token.")
        }
        let image: GlanceImage
        do {
            image = try await client.showImage(imageID, auth: .token(token))
        } catch {
            throw Self.uploadError(error, cloud: cloud)
        }
        if let push = try catalog.push(cloud: cloud, imageID: imageID), push.state != .failed {
            let what = push.state == .staged ? "staged data" : "data (push \(push.state.rawValue))"
            throw UploadError.refused(status: 409, message: "Depot already holds \(what) for image \(imageID); an image takes data once")
        }
        guard image.status == "queued" else {
            let target = method == .upload ? "saving" : "uploading"
            throw UploadError.refused(status: 409, message: "Image status transition from \(image.status ?? "unknown") to \(target) is not allowed")
        }
        try await probeModify(client, cloud: cloud, imageID: imageID, token: token, action: method == .upload ? "upload_image" : "modify_image")
        if method == .upload, let missing = UploadTarget.missingFormats(image) { throw missing }
        return UploadTarget(cloud: cloud, image: image, method: method)
    }

    /// Checks that the caller may import data Depot staged for an image.
    public func authorizeImport(token: String?, cloud: String, imageID: String) async throws {
        let client = try client(for: cloud)
        guard let token, !token.isEmpty else {
            throw UploadError.refused(status: 401, message: "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token.")
        }
        try await probeModify(client, cloud: cloud, imageID: imageID, token: token, action: "import_image")
    }

    private func probeModify(_ client: GlanceClient, cloud: String, imageID: String, token: String, action: String) async throws {
        do {
            _ = try await client.updateImage(imageID, [.remove(Self.probeProperty)], auth: .token(token))
        } catch let error where error.status == 409 {
            // Allowed: the property does not exist, and nothing changed.
        } catch let error where error.status == 403 {
            throw UploadError.refused(status: 403, message: "You are not authorized to complete \(action) action.")
        } catch {
            throw Self.uploadError(error, cloud: cloud)
        }
    }

    /// A property name no image carries.
    static let probeProperty = "depot_upload_permission_probe_6f1d"

    static func uploadError(_ error: GlanceError, cloud: String) -> any Error {
        if let status = error.status, !error.isTransient {
            return UploadError.refused(status: status, message: GlanceError.message(of: error))
        }
        return CacheError.backendUnavailable(cloud: cloud, reason: "\(error)")
    }

    /// Whether the caller can already read an image that holds these bytes: only then may a
    /// declared digest stand in for the body (knowing a digest is not owning the bytes).
    public func callerMayRead(_ digest: Digest, token: String) async -> Bool {
        guard store.contains(digest), let images = try? catalog.images(of: digest) else { return false }
        for record in images.prefix(16) {
            if (try? await authorize(token: token, cloud: record.cloud, imageID: record.imageID)) != nil { return true }
        }
        return false
    }

    /// A hold for the blob one upload is about to publish; see `UploadHold`.
    public func uploadHold(named id: String) -> UploadHold { UploadHold(budget: budget, holder: .upload(id)) }

    /// Reserves budget room for upload bytes (evicting least recently used blobs if needed).
    public func reserve(_ bytes: UInt64) async throws(CacheError) {
        for evicted in try await budget.reserve(bytes) { forgetBlob(evicted) }
    }

    /// Returns a reservation; a committed blob takes its place.
    public func settle(reserved bytes: UInt64, committed blob: CommittedBlob?) {
        budget.settle(reserved: bytes, committed: blob)
    }

    /// The blob's record with its SHA-512 and MD5, computed now if the upload deferred them
    /// (see `DigestPasses`).
    public func completeDigests(_ digest: Digest) async throws -> BlobRecord { try await digests.complete(digest) }

    /// Completes a blob's digests in the background; nobody waits for them now.
    public func completeDigestsLater(_ digest: Digest) { digests.completeLater(digest) }

    /// Keeps a committed blob that no image took as an ordinary cache entry: counted in the
    /// budget and evictable like any other.
    public func keepUnreferenced(_ blob: CommittedBlob, reserved: UInt64) {
        do {
            try catalog.recordBlob(blob)
            budget.settle(reserved: reserved, committed: blob)
        } catch {
            // Unrecorded, the file would be a stray that fsync reports: remove it instead.
            budget.settle(reserved: reserved, committed: nil)
            if !blob.deduplicated { try? store.remove(blob.digest) }
        }
    }

    /// Records bytes accepted for an image: the blob, the image's mapping to it and the push
    /// that owes it to the backend, in one transaction; from now on the blob is kept until the
    /// push is settled and the image is served from it.
    ///
    /// - Parameters:
    ///   - claimed: the caller runs the push itself (write-through).
    ///   - virtualSize: Glance's `virtual_size` for these bytes, from the upload's inspection.
    @discardableResult
    public func accept(_ blob: CommittedBlob, for target: UploadTarget, staged: Bool, claimed: Bool = false, virtualSize: Int64? = nil) async throws -> PushRecord {
        let push = PushRecord(cloud: target.cloud, imageID: target.image.id, digest: blob.digest, method: target.method, state: staged ? .staged : .pending)
        var record = Self.record(cloud: target.cloud, image: target.image, digest: blob.digest)
        // Digests a deduplicated blob already had; otherwise `completeDigests` fills them in.
        let known = try? catalog.blob(blob.digest)
        record.size = Int64(blob.size)
        record.checksum = blob.digests[.md5]?.hex ?? known?.md5
        record.osHashValue = blob.digests[.sha512]?.hex ?? known?.sha512
        record.osHashAlgo = record.osHashValue == nil ? nil : "sha512"
        record.virtualSize = virtualSize
        await budget.hold(blob.digest, by: .push(ImageKey(cloud: target.cloud, imageID: target.image.id)))
        // Held now, the blob stays; but a blob this upload deduplicated against may have been
        // evicted in the moment before. Then the bytes are gone: say so rather than acknowledge.
        guard store.contains(blob.digest) else {
            budget.release(blob.digest, by: .push(ImageKey(cloud: target.cloud, imageID: target.image.id)))
            throw UploadError.refused(
                status: 503, message: "the stored copy of these bytes was evicted while the upload ended; nothing was kept, retry the upload")
        }
        if claimed { _ = pushes.claim(cloud: target.cloud, imageID: target.image.id) }
        do {
            try catalog.recordUpload(blob, image: record, push: push)
        } catch {
            budget.release(blob.digest, by: .push(ImageKey(cloud: target.cloud, imageID: target.image.id)))
            if claimed { pushes.unclaim(cloud: target.cloud, imageID: target.image.id) }
            throw error
        }
        if !staged { resolver.remember(ImageKey(cloud: target.cloud, imageID: target.image.id), blob.digest) }
        if !staged && !claimed { pushes.wake() }
        return push
    }

    /// Runs a claimed push now with the caller's token and reports how it ended, with the
    /// backend's status when it refused.
    public func pushNow(_ push: PushRecord, token: String) async -> (push: PushRecord, status: Int?) {
        let (result, status) = await pushes.attempt(push, auth: .token(token))
        pushes.unclaim(cloud: push.cloud, imageID: push.imageID)
        if result.state == .pending {
            // Write-through answers now: a failed attempt is not retried behind the caller's back.
            var failed = result
            failed.state = .failed
            try? catalog.update(failed)
            pushSettled(failed)
            return (failed, status)
        }
        return (result, status)
    }

    /// Starts the push of data staged through Depot (`POST /v2/images/{id}/import` with
    /// glance-direct). Nil when Depot has no staged data for the image.
    public func importStaged(cloud: String, imageID: String) throws -> PushRecord? {
        guard var push = try catalog.push(cloud: cloud, imageID: imageID), push.state == .staged else { return nil }
        push.state = .pending
        push.nextAttempt = Date().timeIntervalSince1970
        try catalog.update(push)
        resolver.remember(ImageKey(cloud: cloud, imageID: imageID), push.digest)
        pushes.wake()
        return push
    }

    /// A push stopped being pending: its blob may be evicted again; after a failure the
    /// image no longer maps to it (Glance may hold other bytes under that id).
    func pushSettled(_ push: PushRecord) { pushes.settlement.settled(push) }

    /// Whether Depot holds bytes it acknowledged for this image that Glance's record does not
    /// show yet (a pending push, or one done a moment after Glance answered).
    func owesAcknowledgedBytes(cloud: String, image: GlanceImage) -> Bool {
        guard Self.statusesBeforeData.contains(image.status ?? ""), let push = try? catalog.push(cloud: cloud, imageID: image.id) else { return false }
        return push.state == .pending || push.state == .done
    }
}

/// Keeps the blob an upload publishes from the moment its name is known until the upload's
/// push holds it (or the upload failed): an eviction under way is waited for, so the upload
/// writes its own copy instead of deduplicating against one that is going away.
public final class UploadHold: Sendable {
    private let budget: DiskBudget
    private let holder: BlobHolder
    private let digest = Mutex<Digest?>(nil)

    init(budget: DiskBudget, holder: BlobHolder) {
        self.budget = budget
        self.holder = holder
    }

    /// Takes the hold; blocks the calling thread while the blob is being evicted. Pass it as
    /// `BlobIngest`'s beforeCommit.
    @Sendable public func hold(_ digest: Digest) {
        budget.holdBlocking(digest, by: holder)
        self.digest.withLock { $0 = digest }
    }

    /// Ends the hold; harmless when none was taken.
    public func release() {
        if let digest = digest.withLock({ $0 }) { budget.release(digest, by: holder) }
    }
}
