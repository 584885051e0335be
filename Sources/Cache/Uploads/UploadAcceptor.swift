import BlobStore
import Catalog
import FormatInspector
import Foundation
import Glance

/// Takes uploads: checks with Glance that the caller may put data into the image, keeps the
/// body's budget room and its blob (stored once, deduplicated by SHA-256), records the bytes
/// acknowledged from local disk, and hands them to the push queue that owes them to Glance.
///
/// Receiving the body (HTTP, 100-continue, multipart) is Proxy's; everything it decides with
/// the cache's state is here.
public final class UploadAcceptor: Sendable {
    private let clouds: [String: GlanceClient]
    private let store: BlobStore
    private let catalog: Catalog
    private let disk: DiskPools
    private let budget: DiskBudget
    private let resolver: BlobResolver
    private let digests: DigestPasses
    private let pushes: PushQueue
    private let landings: Landings
    /// Uploads being received now, within `CacheSettings.maximumUploads`.
    public let slots: ConcurrencyLimit

    init(
        clouds: [String: GlanceClient], store: BlobStore, catalog: Catalog, disk: DiskPools, budget: DiskBudget, resolver: BlobResolver,
        digests: DigestPasses, pushes: PushQueue, landings: Landings, maximumUploads: Int
    ) {
        self.landings = landings
        self.clouds = clouds
        self.store = store
        self.catalog = catalog
        self.disk = disk
        self.budget = budget
        self.resolver = resolver
        self.digests = digests
        self.pushes = pushes
        slots = ConcurrencyLimit(maximumUploads)
    }

    // MARK: Authorization

    /// Checks with the backend, with the caller's own token, that the caller may put data into
    /// an image, and that the image can take data.
    ///
    /// Glance has no dry-run upload, so Depot asks it to remove a property no image has: Glance
    /// checks `modify_image` (whose default rule is the same as `upload_image`'s) and answers
    /// 409 "does not exist" to a caller who may, 403 to one who may not, and changes nothing.
    public func authorizeUpload(token: String?, cloud: String, imageID: String, method: PushRecord.Method) async throws -> UploadTarget {
        let client = try client(for: cloud)
        guard let token, !token.isEmpty else { throw Self.noToken }
        // A record read before a push of Depot's landed may be this image's, whose push row
        // went with its evicted blob: it is asked for again rather than take data twice.
        let image = try await landings.freshRecord(cloud: cloud, { () async throws -> GlanceImage in
            do throws(GlanceError) {
                return try await client.showImage(imageID, auth: .token(token))
            } catch {
                throw Self.uploadError(error, cloud: cloud)
            }
        }, check: { _ in
            if let push = try catalog.push(cloud: cloud, imageID: imageID), push.state != .failed {
                let what = push.state == .staged ? "staged data" : "data (push \(push.state.rawValue))"
                throw UploadError.refused(status: 409, message: "Depot already holds \(what) for image \(imageID); an image takes data once")
            }
        })
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
        guard let token, !token.isEmpty else { throw Self.noToken }
        try await probeModify(client, cloud: cloud, imageID: imageID, token: token, action: "import_image")
    }

    private func client(for cloud: String) throws(CacheError) -> GlanceClient {
        guard let client = clouds[cloud] else { throw .unknownCloud(cloud) }
        return client
    }

    private static let noToken = UploadError.refused(
        status: 401, message: "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token.")

    private func probeModify(_ client: GlanceClient, cloud: String, imageID: String, token: String, action: String) async throws {
        do {
            // Retried like a GET after a transient failure: removing a property no image has
            // changes nothing however often it is asked. Before, one transient failure of it
            // from a busy Glance refused the whole upload with 503 (seen in ThreadBoundTests:
            // 16 uploads beside 64 fills).
            _ = try await client.updateImage(imageID, [.remove(Self.probeProperty)], auth: .token(token), retryingTransientFailures: true)
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

    // MARK: Receiving

    /// A hold for the blob one upload is about to publish; see `UploadHold`.
    public func hold(named id: String) -> UploadHold { UploadHold(budget: budget, holder: .upload(id)) }

    /// A new blob for an upload's body, written and hashed on the disk pool; `hold` keeps it
    /// from its naming on.
    public func ingest(expecting expectation: BlobExpectation, hold: UploadHold) throws(BlobStoreError) -> BlobIngest {
        try BlobIngest(store: store, disk: disk, expecting: expectation, alsoCompute: [], beforeCommit: hold.hold)
    }

    /// Reserves budget room for upload bytes (evicting least recently used blobs if needed).
    public func reserve(_ bytes: UInt64) async throws(CacheError) {
        for evicted in try await budget.reserve(bytes) { resolver.forgetBlob(evicted) }
    }

    /// Returns a reservation; a committed blob takes its place.
    public func settle(reserved bytes: UInt64, committed blob: CommittedBlob?) {
        budget.settle(reserved: bytes, committed: blob)
    }

    /// The blob an upload declared by digest, when Depot holds it (a body it may skip).
    public func storedBlob(_ digest: Digest) -> BlobRecord? {
        guard let blob = try? catalog.blob(digest), store.contains(digest) else { return nil }
        return blob
    }

    /// Inspects a stored blob as Glance inspects an upload of the same bytes, reading only what
    /// the inspection wants (the first 64 KiB and the regions its headers name): for an upload
    /// whose body Depot skipped because it already holds the bytes.
    ///
    /// - Throws: `BlobStoreError` when the blob cannot be read.
    public func inspectStored(_ digest: Digest) async throws -> Inspection {
        let store = self.store
        return try await disk.run {
            Result { () throws(BlobStoreError) -> Inspection in
                let reader = try store.open(digest)
                return try FormatInspector.inspect(length: reader.size) { (range: Range<UInt64>) throws(BlobStoreError) -> [UInt8] in
                    try reader.read(range)
                }
            }
        }.get()
    }

    /// The path a committed blob is read from.
    public func path(of digest: Digest) -> String { store.path(for: digest) }

    // MARK: Acknowledging

    /// The blob's record with its SHA-512 and MD5, computed now if the upload deferred them
    /// (see `DigestPasses`).
    public func completeDigests(_ digest: Digest) async throws -> BlobRecord { try await digests.complete(digest) }

    /// Completes a blob's digests in the background; nobody waits for them now.
    public func completeDigestsLater(_ digest: Digest) { digests.completeLater(digest) }

    /// Keeps a committed blob that no image took as an ordinary cache entry: counted in the
    /// budget and evictable like any other.
    public func keepUnreferenced(_ blob: CommittedBlob, reserved: UInt64) async {
        let catalog = catalog
        // The Catalog's write syncs its WAL and may wait seconds for its lock: off the
        // cooperative pool, whose few threads every request needs.
        if await disk.run({ (try? catalog.recordBlob(blob)) != nil }) {
            budget.settle(reserved: reserved, committed: blob)
        } else {
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
    /// - Throws: `UploadError.refused` (503) when the deduplicated copy was evicted meanwhile;
    ///   the Catalog's errors.
    @discardableResult
    public func accept(_ blob: CommittedBlob, for target: UploadTarget, staged: Bool, claimed: Bool = false, virtualSize: Int64? = nil) async throws -> PushRecord {
        let push = PushRecord(cloud: target.cloud, imageID: target.image.id, digest: blob.digest, method: target.method, state: staged ? .staged : .pending)
        let record = uploadRecord(blob, for: target, virtualSize: virtualSize)
        await budget.hold(blob.digest, by: .push(target.key))
        // Held now, the blob stays; but a blob this upload deduplicated against may have been
        // evicted in the moment before. Then the bytes are gone: say so rather than acknowledge.
        guard store.contains(blob.digest) else {
            budget.release(blob.digest, by: .push(target.key))
            throw UploadError.refused(
                status: 503, message: "the stored copy of these bytes was evicted while the upload ended; nothing was kept, retry the upload")
        }
        if claimed { _ = pushes.claim(cloud: target.cloud, imageID: target.image.id) }
        let catalog = catalog
        do {
            // Syncs the WAL and may wait seconds for the lock: on the disk pool, as a fill's commit.
            try await disk.run { () throws in try catalog.recordUpload(blob, image: record, push: push) }
        } catch {
            budget.release(blob.digest, by: .push(target.key))
            if claimed { pushes.unclaim(cloud: target.cloud, imageID: target.image.id) }
            throw error
        }
        if !staged { resolver.remember(target.key, blob.digest) }
        if !staged && !claimed { pushes.wake() }
        return push
    }

    /// The image's record as the push will leave it in Glance: size, and the digests the blob
    /// has (a deduplicated blob's known ones; otherwise `completeDigests` fills them in).
    private func uploadRecord(_ blob: CommittedBlob, for target: UploadTarget, virtualSize: Int64?) -> ImageRecord {
        var record = BlobResolver.record(cloud: target.cloud, image: target.image, digest: blob.digest)
        let known = try? catalog.blob(blob.digest)
        record.size = Int64(blob.size)
        record.checksum = blob.digests[.md5]?.hex ?? known?.md5
        record.osHashValue = blob.digests[.sha512]?.hex ?? known?.sha512
        record.osHashAlgo = record.osHashValue == nil ? nil : "sha512"
        record.virtualSize = virtualSize
        return record
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
            let (catalog, settlement, recorded) = (catalog, pushes.settlement, failed)
            // Both write to the Catalog: on the disk pool.
            await disk.run {
                try? catalog.update(recorded)
                settlement.settled(recorded)
            }
            return (failed, status)
        }
        return (result, status)
    }

    /// Whether Depot holds data staged through it for an image (`PUT …/stage`).
    public func hasStaged(cloud: String, imageID: String) -> Bool {
        (try? catalog.push(cloud: cloud, imageID: imageID))?.state == .staged
    }

    /// Starts the push of data staged through Depot (`POST /v2/images/{id}/import` with
    /// glance-direct). Nil when Depot has no staged data for the image.
    public func importStaged(cloud: String, imageID: String) async throws -> PushRecord? {
        guard var push = try catalog.push(cloud: cloud, imageID: imageID), push.state == .staged else { return nil }
        push.state = .pending
        push.nextAttempt = Date().timeIntervalSince1970
        let (catalog, pending) = (catalog, push)
        // Syncs the WAL and may wait seconds for the lock: on the disk pool.
        try await disk.run { () throws in try catalog.update(pending) }
        resolver.remember(ImageKey(cloud: cloud, imageID: imageID), push.digest)
        pushes.wake()
        return push
    }
}
