import BlobStore
import Catalog
import Eviction
import Foundation
import Glance
import Logging
import Metrics
import Synchronization

/// Why the cache cannot serve a request; each case maps to one HTTP answer.
public enum CacheError: Error, CustomStringConvertible, Sendable {
    /// The backend refused the caller (401, 403, 404…): passed on as the backend gave it.
    case backendRefused(status: Int, message: String)
    /// The image exists but has no data to serve (queued, deactivated…).
    case imageNotActive(imageID: String, status: String)
    /// The backend could not be reached and no recent decision lets Depot serve without it.
    case backendUnavailable(cloud: String, reason: String)
    /// No such cloud is configured.
    case unknownCloud(String)
    /// The backend download or the local write failed.
    case fillFailed(imageID: String, reason: String)
    /// The image does not fit in the cache budget, even after evicting all that may go.
    case budgetExhausted(needed: UInt64, budget: UInt64, used: UInt64)
    /// Writing the image would leave less than `min_free_disk` free on the data directory's
    /// filesystem, even after evicting all that may go.
    case diskFloor(needed: UInt64, minimumFree: UInt64)
    /// As many fills as `limits.max_fills` allows are running; a new one would overload the
    /// backend or the disk.
    case tooManyFills(running: Int)
    /// As many uploads as `limits.max_uploads` allows are being received.
    case tooManyUploads(running: Int)
    /// The data directory's filesystem has no room for the image (ENOSPC), whatever the budget
    /// says: something else filled it.
    case diskFull(imageID: String, needed: UInt64)

    /// The cache budget has no room for the image: the backend can still serve it, through
    /// Depot, without a copy being kept.
    ///
    /// A full budget is a cache's normal state and must not fail a download. A disk that is
    /// full or below `min_free_disk` is a fault of the host the operator has to see: that stays
    /// 507.
    public var isOverBudget: Bool {
        if case .budgetExhausted = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case let .backendRefused(status, message): "the image service answered \(status): \(message)"
        case let .imageNotActive(id, status): "image \(id) is \(status); only active images have data to download"
        case let .backendUnavailable(cloud, reason): "the image service of cloud \(cloud) is unreachable (\(reason)); retry later"
        case let .unknownCloud(name): "no cloud named \(name) is configured"
        case let .fillFailed(id, reason): "fetching image \(id) from the image service failed: \(reason)"
        case let .budgetExhausted(needed, budget, used):
            "the image needs \(needed) bytes but the cache budget of \(budget) bytes holds \(used) bytes that are pinned, being read, being filled or waiting for their push; retry later or raise cache.size"
        case let .diskFloor(needed, minimum):
            "the image needs \(needed) bytes and the data directory's filesystem must keep \(minimum) bytes free (cache.min_free_disk); free space on it or lower the limit"
        case let .diskFull(id, needed):
            "the data directory's filesystem has no room for image \(id) (\(needed) bytes); nothing was kept. Free space on it, or set cache.size below the space Depot may use"
        case let .tooManyUploads(running):
            "Depot is already receiving \(running) uploads, its limit (limits.max_uploads); retry in a few seconds"
        case let .tooManyFills(running):
            "Depot is already fetching \(running) images from the image service, its limit (limits.max_fills); retry in a few seconds"
        }
    }
}

/// An image the caller may read, and where its bytes are.
public struct AuthorizedImage: Sendable {
    public let cloud: String
    public let image: GlanceImage
    /// True when the backend was down and a recent decision was used instead.
    public let fromOfflineGrace: Bool

    public init(cloud: String, image: GlanceImage, fromOfflineGrace: Bool) {
        self.cloud = cloud
        self.image = image
        self.fromOfflineGrace = fromOfflineGrace
    }

    package var key: ImageKey { ImageKey(cloud: cloud, imageID: image.id) }
}

/// Settings of the cache's behaviour.
public struct CacheSettings: Sendable {
    /// How long a positive authorization decision is reused for the same token and image.
    public var decisionTTL: Duration = .seconds(60)
    /// While the backend is down, a decision this young still lets a cached image be served.
    public var offlineGrace: Duration = .seconds(24 * 3600)
    /// The disk budget for blobs with its watermarks; nil keeps every blob.
    public var budget: Watermarks?
    /// Free space the data directory's filesystem must keep; blobs are evicted to keep it.
    public var minimumFreeDisk: UInt64?
    /// How uploads are pushed to the backends.
    public var push = PushSettings()
    /// Backend fills running at once; one more image is refused (503) until one ends.
    public var maximumFills = 32
    /// Uploads received at once (each holds a writer thread and up to 12 MiB of buffers).
    public var maximumUploads = 16

    public init() {}
}

/// The cache's decisions, without sockets: who may read an image, which blob holds it, and the
/// single backend fill per image.
public final class ImageCache: Sendable, AcknowledgedUploads {
    public let store: BlobStore
    public let catalog: Catalog
    public let clouds: [String: GlanceClient]
    public let defaultCloud: String
    public let settings: CacheSettings
    /// Where blocking disk work runs.
    public let disk: DiskPools
    let logger: Logger

    /// Who may read an image.
    let authorizer: Authorizer
    private let fills: Mutex<SingleFlight<Fill, CheckedContinuation<FillClaim, Never>>>
    private let pendingHits = Mutex<[Digest: (Int, Date)]>([:])
    /// Which blob holds an image's bytes.
    let resolver: BlobResolver
    /// Each cloud's default store id (`stores` of an uploaded image), once Glance told it.
    let defaultStores = Mutex<[String: String?]>([:])
    /// The SHA-512 and MD5 computed after a blob's commit.
    let digests: DigestPasses
    let forgetter: ImageForgetter

    let budget: DiskBudget
    /// The bytes Depot owes to backends.
    public let pushes: PushQueue
    /// What was served from where.
    public let statistics = CacheStatistics()
    /// What the integrity checks (size at open, the scrub) verified and found.
    public let integrity = IntegrityStatistics()
    /// Uploads being received now, within `settings.maximumUploads`.
    public let uploadSlots: ConcurrencyLimit
    /// Fills, digest passes, landing pushes and the hit flush; the application runs it (see `BackgroundWork`).
    public let background: BackgroundWork

    public init(
        store: BlobStore, catalog: Catalog, clouds: [String: GlanceClient], defaultCloud: String, settings: CacheSettings = .init(),
        disk: DiskPools = .shared, logger: Logger = Logger(label: "depot.cache")
    ) throws {
        self.disk = disk
        self.store = store
        self.catalog = catalog
        self.clouds = clouds
        self.defaultCloud = defaultCloud
        self.settings = settings
        self.logger = logger
        uploadSlots = ConcurrencyLimit(settings.maximumUploads)
        fills = Mutex(SingleFlight(limit: settings.maximumFills))
        resolver = BlobResolver(store: store, catalog: catalog)
        authorizer = Authorizer(clouds: clouds, settings: settings, logger: logger)
        budget = try DiskBudget(watermarks: settings.budget, minimumFreeBytes: settings.minimumFreeDisk, store: store, catalog: catalog, logger: logger)
        let background = BackgroundWork()
        self.background = background
        digests = DigestPasses(store: store, catalog: catalog, disk: disk, background: background, logger: logger)
        forgetter = ImageForgetter(catalog: catalog, resolver: resolver, authorizer: authorizer, logger: logger)
        pushes = PushQueue(
            catalog: catalog, store: store, clouds: clouds, settings: settings.push, digests: digests,
            settlement: PushSettlement(budget: budget, catalog: catalog, forgetter: forgetter), logger: logger)
    }

    /// Bytes of committed blobs and of reservations for running fills (nil without a budget).
    public var budgetUsage: (used: UInt64, reserved: UInt64, budget: UInt64)? {
        guard let limit = budget.watermarks?.budget else { return nil }
        let usage = budget.usage
        return (usage.used, usage.reserved, limit)
    }

    /// Marks a blob as being read, so eviction leaves it alone; pair with `endRead`.
    public func beginRead(_ digest: Digest) { budget.beginRead(digest) }
    public func endRead(_ digest: Digest) { budget.endRead(digest) }

    public func client(for cloud: String) throws(CacheError) -> GlanceClient {
        guard let client = clouds[cloud] else { throw .unknownCloud(cloud) }
        return client
    }

    // MARK: Authorization

    /// Asks the backend, with the caller's own token, whether the caller may read the image;
    /// see `Authorizer`. An image Glance no longer shows active is forgotten.
    public func authorize(token: String?, cloud: String, imageID: String) async throws(CacheError) -> AuthorizedImage {
        do {
            return try await authorizer.authorize(token: token, cloud: cloud, imageID: imageID, uploads: self)
        } catch {
            if case .imageNotActive = error { forget(cloud: cloud, imageID: imageID) }
            throw error
        }
    }

    // MARK: Resolution

    /// The blob that holds an image's bytes, if Depot has it: by mapping, or by matching
    /// Glance's SHA-512 / MD5 against a blob it already holds (same bytes, another image id or
    /// cloud), in which case the mapping is recorded.
    public func resolve(_ authorized: AuthorizedImage) throws -> Digest? { try resolver.resolve(authorized) }

    /// What Depot can answer without any I/O: the image record of a still-valid positive
    /// decision for this token, and the blob the image resolved to. Nil when either is not
    /// known (the caller then takes the full path).
    public func knownHit(token: String?, cloud: String, imageID: String) -> (image: GlanceImage, digest: Digest)? {
        guard let token, !token.isEmpty else { return nil }
        let key = ImageKey(cloud: cloud, imageID: imageID)
        guard let image = authorizer.decidedImage(token: token, key), let digest = resolver.known(key) else { return nil }
        return (image, digest)
    }

    /// Drops what Depot knows of an image (deleted or deactivated upstream).
    public func forget(cloud: String, imageID: String) { forgetter.forget(ImageKey(cloud: cloud, imageID: imageID)) }

    /// Drops in-memory knowledge of an evicted blob (the Catalog rows are already gone).
    func forgetBlob(_ digest: Digest) { resolver.forgetBlob(digest) }

    static func record(cloud: String, image: GlanceImage, digest: Digest) -> ImageRecord {
        BlobResolver.record(cloud: cloud, image: image, digest: digest)
    }

    /// Counts a hit on a blob (last access for LRU, hit count). Hits are kept in memory and
    /// written to the Catalog in one transaction a second later: a hit never waits on SQLite.
    public func touch(_ digest: Digest) {
        budget.touch(digest)
        let scheduleFlush = pendingHits.withLock { pending -> Bool in
            let first = pending.isEmpty
            pending[digest, default: (0, Date())].0 += 1
            pending[digest]!.1 = Date()
            return first
        }
        guard scheduleFlush else { return }
        let scheduled = background.submit {
            // Cancelled at shutdown: the hits are written at once then.
            try? await Task.sleep(for: .seconds(1))
            self.flushHits()
        }
        if !scheduled { flushHits() }
    }

    /// Writes the hits collected since the last flush.
    public func flushHits() {
        let batch = pendingHits.withLock { pending in
            defer { pending = [:] }
            return pending.map { (digest: $0.key, hits: $0.value.0, at: $0.value.1) }
        }
        do { try catalog.touch(batch) } catch {
            logger.warning("cannot record hits", metadata: ["blobs": "\(batch.count)", "error": "\(error)"])
        }
    }

    // MARK: Fills

    /// The hash Glance published that proves an image's bytes: SHA-512 when it has one, else MD5.
    public static func provingDigest(of image: GlanceImage) -> Digest? {
        if image.osHashAlgo == "sha512", let hex = image.osHashValue, let digest = try? Digest(algorithm: .sha512, hex: hex) {
            return digest
        }
        return image.checksum.flatMap { try? Digest(algorithm: .md5, hex: $0) }
    }

    /// The running fill of an image, or a new one started now. `shared` is true when the
    /// caller joins a fill another request started.
    ///
    /// The image is claimed before any room is reserved: requests that arrive while the claimer
    /// reserves room (which may evict) and opens the writer wait for it and join its fill, so
    /// one image is reserved, evicted for and fetched once.
    ///
    /// - Throws: `CacheError` (`.budgetExhausted` when the image has no room: the caller may
    ///   stream it without a copy; the requests that waited for the claimer hear the same).
    public func fill(_ authorized: AuthorizedImage) async throws(CacheError) -> (fill: Fill, shared: Bool) {
        let client = try client(for: authorized.cloud)
        let key = authorized.key
        let claim = await withCheckedContinuation { (continuation: CheckedContinuation<FillClaim, Never>) in
            switch fills.withLock({ $0.claim(key, waiter: continuation) }) {
            case .lead: continuation.resume(returning: .lead)
            case let .join(fill): continuation.resume(returning: .joined(fill))
            case let .refuse(running): continuation.resume(returning: .refused(.tooManyFills(running: running)))
            case .wait: break
            }
        }
        switch claim {
        case let .joined(fill): return (fill, true)
        case let .refused(error): throw error
        case .lead: break
        }
        do throws(CacheError) {
            let (fill, writer) = try await startFill(authorized)
            for waiter in fills.withLock({ $0.started(key, fill) }) { waiter.resume(returning: .joined(fill)) }
            let scheduled = background.submit { await self.run(fill, key: key, writer: writer, client: client, image: authorized.image) }
            if !scheduled { abandon(fill, key: key, writer: writer, reason: "Depot is shutting down") }
            return (fill, false)
        } catch {
            for waiter in fills.withLock({ $0.abandoned(key) }) { waiter.resume(returning: .refused(error)) }
            throw error
        }
    }

    /// What a request that asked for an image's fill gets.
    enum FillClaim: Sendable {
        /// It claimed the image and starts the fill.
        case lead
        case joined(Fill)
        case refused(CacheError)
    }

    /// Reserves room for a claimed image and opens the fill's writer.
    private func startFill(_ authorized: AuthorizedImage) async throws(CacheError) -> (Fill, WriterBox) {
        let image = authorized.image
        let reserved = image.size ?? 0
        for evicted in try await budget.reserve(reserved, isFill: true) { forgetBlob(evicted) }
        var expectation = BlobExpectation(size: image.size)
        // MD5 is computed after the commit, off the fill's path, when SHA-512 proves the bytes.
        switch Self.provingDigest(of: image) {
        case let digest? where digest.algorithm == .sha512: expectation.sha512 = digest
        case let digest?: expectation.md5 = digest
        case nil: break
        }
        let writer: BlobWriter
        do {
            writer = try store.makeWriter(expecting: expectation, alsoCompute: expectation.sha512 == nil ? [.sha512, .md5] : [])
        } catch {
            budget.settle(reserved: reserved, committed: nil)
            if case .diskFull = error { throw .diskFull(imageID: image.id, needed: reserved) }
            throw .fillFailed(imageID: image.id, reason: "\(error)")
        }
        do {
            let fill = try Fill(cloud: authorized.cloud, imageID: image.id, expectedSize: image.size ?? 0, temporaryPath: writer.temporaryPath)
            return (fill, WriterBox(writer))
        } catch {
            writer.abort()
            budget.settle(reserved: reserved, committed: nil)
            throw error
        }
    }

    private func run(_ fill: Fill, key: ImageKey, writer box: WriterBox, client: GlanceClient, image: GlanceImage) async {
        let started = ContinuousClock.now
        var deferredDigests: Digest?
        logger.info("fill started", metadata: ["cloud": "\(fill.cloud)", "image": "\(image.id)", "size": "\(fill.expectedSize)"])
        do {
            // libcurl hands over tens of KiB at a time; whole batches let the writer hash its
            // digests in parallel lanes instead of one after the other.
            let batch = WriteBatch(capacity: Self.fillBatchBytes)
            _ = try await client.download(imageID: image.id, auth: .service) { buffer in
                if try batch.append(buffer, to: box.writer) { fill.advance(to: box.writer.bytesWritten) }
            }
            // fsync can take seconds for a large image: keep it off the cooperative pool.
            let result = await disk.run {
                Result { () throws(BlobStoreError) in
                    try batch.flush(to: box.writer)
                    fill.advance(to: box.writer.bytesWritten)
                    return try box.writer.commit()
                }
            }
            let blob = try result.get()
            try catalog.recordBlob(blob)
            try catalog.map(Self.record(cloud: fill.cloud, image: image, digest: blob.digest))
            resolver.remember(key, blob.digest)
            budget.settle(reserved: fill.expectedSize, committed: blob)
            fill.finish(.committed(blob))
            if blob.digests[.md5] == nil { deferredDigests = blob.digest }
            Counter(label: "depot_fills_total", dimensions: [("outcome", "committed")]).increment()
            Timer(label: "depot_fill_duration_seconds").record(duration: ContinuousClock.now - started)
            logger.info(
                "fill committed",
                metadata: ["cloud": "\(fill.cloud)", "image": "\(image.id)", "blob": "\(blob.digest.hex)", "duration": "\(ContinuousClock.now - started)"])
        } catch {
            abandon(fill, key: key, writer: box, reason: "\(error)")
            Counter(label: "depot_backend_errors_total", dimensions: [("operation", "fill")]).increment()
            return
        }
        fills.withLock { $0.ended(key) }
        // Off the fill's path: its readers have every byte already.
        if let deferredDigests { _ = try? await digests.complete(deferredDigests) }
    }

    /// Ends a fill that will not commit: nothing is kept, its readers hear why.
    private func abandon(_ fill: Fill, key: ImageKey, writer box: WriterBox, reason: String) {
        box.writer.abort()
        budget.settle(reserved: fill.expectedSize, committed: nil)
        fill.finish(.failed(reason))
        Counter(label: "depot_fills_total", dimensions: [("outcome", "failed")]).increment()
        logger.error("fill failed; nothing was committed", metadata: ["cloud": "\(fill.cloud)", "image": "\(fill.imageID)", "error": "\(reason)"])
        fills.withLock { $0.ended(key) }
    }

    /// Images whose fill is running.
    func fillKeys() -> [ImageKey] { fills.withLock { $0.running } }

    /// The fill running for an image, if any.
    public func runningFill(cloud: String, imageID: String) -> Fill? {
        fills.withLock { $0.flight(ImageKey(cloud: cloud, imageID: imageID)) }
    }

    /// Streams a byte range straight from the backend (for a cold range far ahead of a fill).
    public func backendRange(cloud: String, imageID: String, range: ClosedRange<UInt64>) async throws -> ImageDownload {
        try await client(for: cloud).openDownload(imageID: imageID, range: range, auth: .service)
    }
}

/// Bytes a fill collects before writing them.
extension ImageCache {
    static let fillBatchBytes = 1 << 20
}

/// Collects a download's small pieces into whole batches for the writer; used by one thread.
final class WriteBatch: @unchecked Sendable {
    private let buffer: UnsafeMutableRawBufferPointer
    private var count = 0

    init(capacity: Int) { buffer = .allocate(byteCount: capacity, alignment: 64) }
    deinit { buffer.deallocate() }

    /// Adds bytes; writes the batch once full. Returns true when it wrote.
    func append(_ bytes: UnsafeRawBufferPointer, to writer: BlobWriter) throws(BlobStoreError) -> Bool {
        if count + bytes.count > buffer.count {
            try flush(to: writer)
            if bytes.count >= buffer.count {
                try writer.write(bytes)
                return true
            }
        }
        if bytes.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: buffer[count...]).copyMemory(from: bytes)
            count += bytes.count
        }
        if count == buffer.count {
            try flush(to: writer)
            return true
        }
        return false
    }

    func flush(to writer: BlobWriter) throws(BlobStoreError) {
        guard count > 0 else { return }
        try writer.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        count = 0
    }
}

/// Hands a writer to the fill's transfer thread; only that thread uses it until commit.
final class WriterBox: @unchecked Sendable {
    let writer: BlobWriter
    init(_ writer: BlobWriter) { self.writer = writer }
}

extension GlanceError {
    /// The backend's own message, or the error's description when it had none.
    public static func message(of error: GlanceError) -> String {
        if case let .http(_, message, _, _) = error, !message.isEmpty { return message }
        return error.description
    }
}
