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

/// The time authorization decisions are dated and aged by: the continuous clock, or in tests
/// one they move on to age decisions without waiting.
public struct DecisionClock: Sendable {
    public let now: @Sendable () -> ContinuousClock.Instant

    public init(now: @escaping @Sendable () -> ContinuousClock.Instant) { self.now = now }

    public static let continuous = DecisionClock { ContinuousClock.now }
}

/// What `ImageCache.knownHit` answers: the image record of a still-valid decision for the
/// token, the decision's memo, the image's blob, and how long that stands.
public struct KnownHit: Sendable {
    public let image: GlanceImage
    public let derived: DecisionMemo
    public let digest: Digest
    /// Nil when the decision is due for a refresh, so that the next hit asks again.
    public let validity: KnownHitValidity?
}

/// How long an answer of `ImageCache.knownHit` stands (`ImageCache.stillKnown(_:)`).
public struct KnownHitValidity: Sendable {
    /// `KnownHitGeneration`'s count before the answer's tables were read.
    let generation: UInt64
    /// When the decision is due for a refresh: time on the decision clock since the
    /// authorizer was made (`Authorizer.sinceStart`).
    let until: Duration
}

/// Settings of the cache's behaviour.
public struct CacheSettings: Sendable {
    /// How long a positive authorization decision is reused for the same token and image.
    public var decisionTTL: Duration = .seconds(60)
    /// While the backend is down, a decision this young still lets a cached image be served.
    public var offlineGrace: Duration = .seconds(24 * 3600)
    /// The clock decisions' ages are measured on (`decisionTTL`, its renewal, `offlineGrace`).
    public var decisionClock = DecisionClock.continuous
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
    /// The single backend fill per image.
    let fills: FillCoordinator
    /// The operator's view and levers.
    let inventoryRoom: Inventory
    private let pendingHits = Mutex<[Digest: (Int, Date)]>([:])
    /// Which blob holds an image's bytes.
    let resolver: BlobResolver
    /// Each cloud's default store id (`stores` of an uploaded image), once Glance told it.
    let defaultStores = Mutex<[String: String?]>([:])
    /// The SHA-512 and MD5 computed after a blob's commit.
    let digests: DigestPasses
    let forgetter: ImageForgetter
    /// Changes to what `knownHit` reads, for its answers kept past one hit.
    let knownHitGeneration: KnownHitGeneration
    /// When pushes last landed, per cloud: Glance's answers from before may be stale.
    let landings = Landings()

    let budget: DiskBudget
    /// The bytes Depot owes to backends.
    public let pushes: PushQueue
    /// What was served from where.
    public let statistics: CacheStatistics
    /// What the integrity checks (size at open, the scrub) verified and found.
    public let integrity: IntegrityStatistics
    /// Uploads: authorization, the body's room and blob, the acknowledgement, the hand-off to `pushes`.
    public let uploads: UploadAcceptor
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
        let generation = KnownHitGeneration()
        knownHitGeneration = generation
        resolver = BlobResolver(store: store, catalog: catalog, disk: disk, generation: generation)
        authorizer = Authorizer(clouds: clouds, settings: settings, generation: generation, logger: logger)
        budget = try DiskBudget(
            watermarks: settings.budget, minimumFreeBytes: settings.minimumFreeDisk, store: store, catalog: catalog, disk: disk, logger: logger)
        let background = BackgroundWork()
        self.background = background
        digests = DigestPasses(store: store, catalog: catalog, disk: disk, background: background, logger: logger)
        fills = FillCoordinator(
            store: store, catalog: catalog, clouds: clouds, maximumFills: settings.maximumFills, budget: budget, resolver: resolver,
            digests: digests, disk: disk, background: background, logger: logger)
        forgetter = ImageForgetter(catalog: catalog, resolver: resolver, authorizer: authorizer, logger: logger)
        pushes = PushQueue(
            catalog: catalog, store: store, disk: disk, clouds: clouds, settings: settings.push, digests: digests,
            settlement: PushSettlement(budget: budget, catalog: catalog, forgetter: forgetter, landings: landings), logger: logger)
        uploads = UploadAcceptor(
            clouds: clouds, store: store, catalog: catalog, disk: disk, budget: budget, resolver: resolver, digests: digests, pushes: pushes,
            landings: landings, maximumUploads: settings.maximumUploads)
        let statistics = CacheStatistics(), integrity = IntegrityStatistics()
        self.statistics = statistics
        self.integrity = integrity
        inventoryRoom = Inventory(
            store: store, catalog: catalog, disk: disk, budget: budget, resolver: resolver, pushes: pushes, fills: fills,
            statistics: statistics, integrity: integrity)
    }

    /// Bytes of committed blobs and of reservations for running fills (nil without a budget).
    public var budgetUsage: (used: UInt64, reserved: UInt64, budget: UInt64)? {
        guard let limit = budget.watermarks?.budget else { return nil }
        let usage = budget.usage
        return (usage.used, usage.reserved, limit)
    }

    /// Marks a blob as being read, so eviction leaves it alone; pair with `endRead`.
    public func beginRead(_ digest: Digest) { budget.beginRead(digest) }

    /// Opens a committed blob of `size` bytes for a hit answered on the event loop, and, when
    /// it is one, does what `touch` and `beginRead` do, under one lock of the budget (a hit
    /// took it three times). Nil when the file or the recorded size is not `size`: the async
    /// path, which quarantines a blob that does not match (`openForHit`), takes the request.
    /// The caller calls `endRead` once the response is sent.
    public func beginHit(_ digest: Digest, size: UInt64) -> BlobReader? {
        // One fstat of the kept reader's file: that reader, or a new one when the file changed.
        guard let reader = try? store.openKept(digest), reader.size == size, budget.beginHit(digest, size: size) else { return nil }
        countHit(digest)
        return reader
    }
    public func endRead(_ digest: Digest) { budget.endRead(digest) }

    public func client(for cloud: String) throws(CacheError) -> GlanceClient {
        guard let client = clouds[cloud] else { throw .unknownCloud(cloud) }
        return client
    }

    // MARK: Authorization

    /// Asks the backend, with the caller's own token, whether the caller may read the image;
    /// see `Authorizer`. An image Glance no longer shows active is forgotten.
    public func authorize(token: String?, cloud: String, imageID: String) async throws(CacheError) -> AuthorizedImage {
        if let token, !token.isEmpty, case let key = ImageKey(cloud: cloud, imageID: imageID), authorizer.decidedImage(token: token, key)?.refresh == true {
            refreshDecision(token: token, key)
        }
        do {
            return try await authorizer.authorize(token: token, cloud: cloud, imageID: imageID, uploads: self)
        } catch {
            if case .imageNotActive = error { await forget(cloud: cloud, imageID: imageID) }
            throw error
        }
    }

    /// Whether the caller can already read an image that holds these bytes: only then may a
    /// declared digest stand in for an upload's body (knowing a digest is not owning the bytes).
    public func callerMayRead(_ digest: Digest, token: String) async -> Bool {
        guard store.contains(digest), let images = try? catalog.images(of: digest) else { return false }
        for record in images.prefix(16) {
            if (try? await authorize(token: token, cloud: record.cloud, imageID: record.imageID)) != nil { return true }
        }
        return false
    }

    // MARK: Resolution

    /// The blob that holds an image's bytes, if Depot has it: by mapping, or by matching
    /// Glance's SHA-512 / MD5 against a blob it already holds (same bytes, another image id or
    /// cloud), in which case the mapping is recorded.
    public func resolve(_ authorized: AuthorizedImage) async throws -> Digest? { try await resolver.resolve(authorized) }

    /// What Depot can answer without any I/O: the image record of a still-valid positive
    /// decision for this token, and the blob the image resolved to. Nil when either is not
    /// known (the caller then takes the full path).
    /// - Parameter fingerprint: `SecretFingerprint(token)`, which a caller that sees the same
    ///   token again (a connection's requests) keeps rather than computes per request.
    /// - Returns: also the decision's memo, for what the caller derives from the record, and
    ///   how long the answer stands as it is (`stillKnown(_:)`); nil when the decision is due
    ///   for a refresh, so that the next hit asks again.
    public func knownHit(token: String, fingerprint: SecretFingerprint, cloud: String, imageID: String) -> KnownHit? {
        guard !token.isEmpty else { return nil }
        assert(fingerprint == SecretFingerprint(token), "knownHit: the fingerprint is not the token's")
        // Loaded before the tables are read (see `KnownHitGeneration`).
        let generation = knownHitGeneration.current
        let key = ImageKey(cloud: cloud, imageID: imageID)
        guard let decided = authorizer.decided(fingerprint: fingerprint, key) else { return nil }
        if decided.refresh { refreshDecision(token: token, key) }
        guard let digest = resolver.known(key) else { return nil }
        return KnownHit(image: decided.image, derived: decided.derived, digest: digest, validity: decided.standsUntil.map { KnownHitValidity(generation: generation, until: $0) })
    }

    /// Whether `knownHit` would give the same answer again as when it gave `validity`, for the
    /// same token and image: no decision or mapping changed since (any, for any image: a
    /// change is rare next to hits), and the decision is not due for a refresh yet. Without a
    /// lock or a table lookup: a connection's next hit on the same image checks only this.
    public func stillKnown(_ validity: KnownHitValidity) -> Bool {
        knownHitGeneration.current == validity.generation && authorizer.sinceStart < validity.until
    }

    /// Asks Glance again in the background for a decision about to expire (see
    /// `Authorizer.decidedImage`); what Glance answers is handled as on the full path.
    func refreshDecision(token: String, _ key: ImageKey) {
        let scheduled = background.submit { [self] in
            do {
                try await authorizer.refresh(token: token, cloud: key.cloud, imageID: key.imageID, uploads: self)
            } catch {
                if case CacheError.imageNotActive = error { await forget(cloud: key.cloud, imageID: key.imageID) }
            }
        }
        if !scheduled { authorizer.abandonRefresh(token: token, key) }
    }

    /// Drops what Depot knows of an image (deleted or deactivated upstream).
    public func forget(cloud: String, imageID: String) async {
        let forgetter = forgetter
        // Unmapping syncs the Catalog's WAL and may wait seconds for its lock: on the disk pool.
        await disk.run { forgetter.forget(ImageKey(cloud: cloud, imageID: imageID)) }
    }

    /// Drops in-memory knowledge of an evicted blob (the Catalog rows are already gone).
    func forgetBlob(_ digest: Digest) { resolver.forgetBlob(digest) }

    /// Counts a hit on a blob (last access for LRU, hit count). Hits are kept in memory and
    /// written to the Catalog in one transaction a second later: a hit never waits on SQLite.
    public func touch(_ digest: Digest) {
        budget.touch(digest)
        countHit(digest)
    }

    /// The hit count and time of `touch`, for the Catalog.
    private func countHit(_ digest: Digest) {
        let now = Date()
        let scheduleFlush = pendingHits.withLock { pending -> Bool in
            let first = pending.isEmpty
            // One lookup of the digest, not one per field.
            if let index = pending.index(forKey: digest) {
                pending.values[index].0 += 1
                pending.values[index].1 = now
            } else {
                pending[digest] = (1, now)
            }
            return first
        }
        guard scheduleFlush else { return }
        let scheduled = background.submit {
            // Cancelled at shutdown: the hits are written at once then.
            try? await Task.sleep(for: .seconds(1))
            // A Catalog write syncs its WAL and may wait for its lock: on the disk pool.
            await self.disk.run { self.flushHits() }
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
    /// caller joins a fill another request started; see `FillCoordinator`.
    ///
    /// - Throws: `CacheError` (`.budgetExhausted` when the image has no room: the caller may
    ///   stream it without a copy; the requests that waited for the claimer hear the same).
    public func fill(_ authorized: AuthorizedImage) async throws(CacheError) -> (fill: Fill, shared: Bool) {
        try await fills.fill(authorized)
    }

    /// Images whose fill is running.
    func fillKeys() -> [ImageKey] { fills.running }

    /// The fill running for an image, if any.
    public func runningFill(cloud: String, imageID: String) -> Fill? { fills.runningFill(cloud: cloud, imageID: imageID) }

    /// Streams a byte range straight from the backend (for a cold range far ahead of a fill).
    public func backendRange(cloud: String, imageID: String, range: ClosedRange<UInt64>) async throws -> ImageDownload {
        try await client(for: cloud).openDownload(imageID: imageID, range: range, auth: .service)
    }
}

extension GlanceError {
    /// The backend's own message, or the error's description when it had none.
    public static func message(of error: GlanceError) -> String {
        if case let .http(_, message, _, _) = error, !message.isEmpty { return message }
        return error.description
    }
}
