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
public final class ImageCache: Sendable {
    public let store: BlobStore
    public let catalog: Catalog
    public let clouds: [String: GlanceClient]
    public let defaultCloud: String
    public let settings: CacheSettings
    /// Where blocking disk work runs.
    public let disk: DiskPools
    let logger: Logger

    private struct Decision {
        var image: GlanceImage
        var decidedAt: ContinuousClock.Instant
    }

    private let decisions = Mutex<[String: Decision]>([:])
    private let fills = Mutex<[String: Fill]>([:])
    private let outage = Mutex<Set<String>>([])
    private let pendingHits = Mutex<[Digest: (Int, Date)]>([:])
    /// Image → blob, as resolved; images are immutable once active, so this only changes when
    /// an image is forgotten or its blob goes.
    let resolved = Mutex<[String: Digest]>([:])
    /// Each cloud's default store id (`stores` of an uploaded image), once Glance told it.
    let defaultStores = Mutex<[String: String?]>([:])
    /// Running passes that compute an uploaded blob's SHA-512 and MD5.
    let digestJobs = Mutex<[Digest: Task<BlobRecord, any Error>]>([:])

    let budget: DiskBudget
    /// The bytes Depot owes to backends.
    public let pushes: PushQueue
    /// What was served from where.
    public let statistics = CacheStatistics()
    /// What the integrity checks (size at open, the scrub) verified and found.
    public let integrity = IntegrityStatistics()
    /// Uploads being received now, within `settings.maximumUploads`.
    public let uploadSlots: ConcurrencyLimit

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
        budget = try DiskBudget(watermarks: settings.budget, minimumFreeBytes: settings.minimumFreeDisk, store: store, catalog: catalog, logger: logger)
        pushes = PushQueue(catalog: catalog, store: store, clouds: clouds, settings: settings.push, logger: logger)
        pushes.onSettled { [unowned self] push in self.pushSettled(push) }
        pushes.digests { [unowned self] digest in try await self.completeDigests(digest) }
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

    /// Asks the backend, with the caller's own token, whether the caller may read the image.
    ///
    /// Positive decisions are reused for `decisionTTL` per (token, cloud, image), never across
    /// tokens. When the backend is unreachable, a decision younger than `offlineGrace` is used.
    public func authorize(token: String?, cloud: String, imageID: String) async throws(CacheError) -> AuthorizedImage {
        let client = try client(for: cloud)
        guard let token, !token.isEmpty else {
            // Glance refuses a request without identity; Depot's own credentials never stand in.
            throw .backendRefused(status: 401, message: "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token.")
        }
        let key = decisionKey(token: token, cloud: cloud, imageID: imageID)
        let now = ContinuousClock.now
        let cached = decisions.withLock { $0[key] }
        if let cached, now - cached.decidedAt < settings.decisionTTL {
            return AuthorizedImage(cloud: cloud, image: cached.image, fromOfflineGrace: false)
        }
        // Seeing an image's record is not downloading it (a reader-only token may do the first
        // and not the second): Glance's own download check runs alongside, on one byte.
        async let downloadRefusal = Self.downloadRefusal(client, imageID: imageID, token: token)
        var image: GlanceImage
        do {
            image = try await client.showImage(imageID, auth: .token(token))
        } catch {
            if let status = error.status, !error.isTransient {
                // A 404 says the image is gone *or* hidden from this token, so the mapping
                // stays: image ids are never reused, and other tokens may still read it.
                decisions.withLock { $0[key] = nil }
                throw .backendRefused(status: status, message: GlanceError.message(of: error))
            }
            if let cached, now - cached.decidedAt < settings.offlineGrace {
                noteOutage(cloud: cloud, error: error)
                return AuthorizedImage(cloud: cloud, image: cached.image, fromOfflineGrace: true)
            }
            noteOutage(cloud: cloud, error: error)
            throw .backendUnavailable(cloud: cloud, reason: "\(error)")
        }
        noteRecovery(cloud: cloud)
        if let refusal = await downloadRefusal, let status = refusal.status {
            decisions.withLock { $0[key] = nil }
            throw .backendRefused(status: status, message: GlanceError.message(of: refusal))
        }
        if !image.isActive, !owesAcknowledgedBytes(cloud: cloud, image: image), Self.inTransition(image),
           let fresh = try? await client.showImage(imageID, auth: .token(token)) {
            // The record was read while the download check ran; an upload's push may have
            // ended since (and its blob gone), leaving "saving" stale.
            image = fresh
        }
        guard image.isActive else {
            if owesAcknowledgedBytes(cloud: cloud, image: image), case let pending = await asAcknowledged(image, cloud: cloud), pending.isActive {
                // Depot holds the bytes and owes them to Glance: serve them meanwhile.
                decisions.withLock { $0[key] = Decision(image: pending, decidedAt: now) }
                return AuthorizedImage(cloud: cloud, image: pending, fromOfflineGrace: false)
            }
            decisions.withLock { $0[key] = nil }
            forget(cloud: cloud, imageID: imageID)
            throw .imageNotActive(imageID: imageID, status: image.status ?? "unknown")
        }
        decisions.withLock { $0[key] = Decision(image: image, decidedAt: now) }
        return AuthorizedImage(cloud: cloud, image: image, fromOfflineGrace: false)
    }

    /// Whether the image is on its way to active (its data is being written).
    static func inTransition(_ image: GlanceImage) -> Bool {
        ["saving", "uploading", "importing"].contains(image.status ?? "")
    }

    /// Glance's refusal (401/403) to let this token download the image, asked with a one-byte
    /// range; nil when it allows it or answers anything else (the record decides then).
    static func downloadRefusal(_ client: GlanceClient, imageID: String, token: String) async -> GlanceError? {
        do {
            // No retries: Glance 33 answers 500 to a range of an image without data, and only
            // 401/403 matter here.
            _ = try await client.download(imageID: imageID, range: 0...0, auth: .token(token), retries: false) { _ in }
            return nil
        } catch {
            return error.status == 403 || error.status == 401 ? error : nil
        }
    }

    func decisionKey(token: String, cloud: String, imageID: String) -> String {
        // Hash the token: the table must not become a list of live credentials.
        "\(Digest.of(Array(token.utf8), algorithm: .sha256).hex)|\(cloud)|\(imageID)"
    }

    private func noteOutage(cloud: String, error: GlanceError) {
        if outage.withLock({ $0.insert(cloud).inserted }) {
            logger.error("image service unreachable; serving cached images within the offline grace", metadata: ["cloud": "\(cloud)", "error": "\(error)"])
        }
    }

    private func noteRecovery(cloud: String) {
        if outage.withLock({ $0.remove(cloud) != nil }) {
            logger.notice("image service reachable again", metadata: ["cloud": "\(cloud)"])
        }
    }

    // MARK: Resolution

    /// The blob that holds an image's bytes, if Depot has it: by mapping, or by matching
    /// Glance's SHA-512 / MD5 against a blob it already holds (same bytes, another image id or
    /// cloud), in which case the mapping is recorded.
    public func resolve(_ authorized: AuthorizedImage) throws -> Digest? {
        let image = authorized.image
        let key = "\(authorized.cloud)|\(image.id)"
        if let known = resolved.withLock({ $0[key] }), store.contains(known) { return known }
        if let mapped = try catalog.mapping(cloud: authorized.cloud, imageID: image.id) {
            if store.contains(mapped.digest) {
                resolved.withLock { $0[key] = mapped.digest }
                return mapped.digest
            }
            try catalog.unmap(cloud: authorized.cloud, imageID: image.id)
        }
        var match: BlobRecord?
        if image.osHashAlgo == "sha512", let hash = image.osHashValue {
            match = try catalog.blob(sha512: hash)
        } else if let md5 = image.checksum {
            match = try catalog.blob(md5: md5)
        }
        guard let match, UInt64(match.size) == image.size, store.contains(match.digest) else { return nil }
        try catalog.map(Self.record(cloud: authorized.cloud, image: image, digest: match.digest))
        resolved.withLock { $0[key] = match.digest }
        return match.digest
    }

    /// What Depot can answer without any I/O: the image record of a still-valid positive
    /// decision for this token, and the blob the image resolved to. Nil when either is not
    /// known (the caller then takes the full path).
    public func knownHit(token: String?, cloud: String, imageID: String) -> (image: GlanceImage, digest: Digest)? {
        guard let token, !token.isEmpty else { return nil }
        let key = decisionKey(token: token, cloud: cloud, imageID: imageID)
        guard let decision = decisions.withLock({ $0[key] }), ContinuousClock.now - decision.decidedAt < settings.decisionTTL,
              let digest = resolved.withLock({ $0["\(cloud)|\(imageID)"] })
        else { return nil }
        return (decision.image, digest)
    }

    /// Drops what Depot knows of an image (deleted or deactivated upstream).
    public func forget(cloud: String, imageID: String) {
        do {
            if try catalog.unmap(cloud: cloud, imageID: imageID) {
                logger.info("forgot image", metadata: ["cloud": "\(cloud)", "image": "\(imageID)"])
            }
        } catch {
            logger.error("cannot drop image mapping", metadata: ["cloud": "\(cloud)", "image": "\(imageID)", "error": "\(error)"])
        }
        resolved.withLock { _ = $0.removeValue(forKey: "\(cloud)|\(imageID)") }
        decisions.withLock { table in
            table = table.filter { !$0.key.hasSuffix("|\(cloud)|\(imageID)") }
        }
    }

    /// Drops in-memory knowledge of an evicted blob (the Catalog rows are already gone).
    func forgetBlob(_ digest: Digest) {
        resolved.withLock { table in table = table.filter { $0.value != digest } }
    }

    static func record(cloud: String, image: GlanceImage, digest: Digest) -> ImageRecord {
        ImageRecord(
            cloud: cloud, imageID: image.id, sha256: digest.hex, status: image.status, checksum: image.checksum,
            osHashAlgo: image.osHashAlgo, osHashValue: image.osHashValue, size: image.size.map { Int64($0) }, owner: image.owner,
            visibility: image.visibility, name: image.name)
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
        Task {
            try? await Task.sleep(for: .seconds(1))
            flushHits()
        }
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
    public func fill(_ authorized: AuthorizedImage) throws(CacheError) -> (fill: Fill, shared: Bool) {
        let image = authorized.image
        let client = try client(for: authorized.cloud)
        let key = "\(authorized.cloud)|\(image.id)"
        let (running, count) = fills.withLock { ($0[key], $0.count) }
        if let running { return (running, true) }
        guard count < settings.maximumFills else { throw .tooManyFills(running: count) }
        let reserved = image.size ?? 0
        for evicted in try budget.reserve(reserved, isFill: true) { forgetBlob(evicted) }
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
        let fill: Fill
        do {
            fill = try Fill(cloud: authorized.cloud, imageID: image.id, expectedSize: image.size ?? 0, temporaryPath: writer.temporaryPath)
        } catch {
            writer.abort()
            budget.settle(reserved: reserved, committed: nil)
            throw error
        }
        let winner = fills.withLock { table -> Fill? in
            if let running = table[key] { return running }
            guard table.count < settings.maximumFills else { return nil }
            table[key] = fill
            return fill
        }
        guard let winner else {
            writer.abort()
            budget.settle(reserved: reserved, committed: nil)
            throw .tooManyFills(running: settings.maximumFills)
        }
        guard winner === fill else {
            writer.abort()
            budget.settle(reserved: reserved, committed: nil)
            return (winner, true)
        }
        let box = WriterBox(writer)
        Task { await self.run(fill, key: key, writer: box, client: client, image: image) }
        return (fill, false)
    }

    private func run(_ fill: Fill, key: String, writer box: WriterBox, client: GlanceClient, image: GlanceImage) async {
        let started = ContinuousClock.now
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
            resolved.withLock { $0["\(fill.cloud)|\(image.id)"] = blob.digest }
            budget.settle(reserved: fill.expectedSize, committed: blob)
            fill.finish(.committed(blob))
            if blob.digests[.md5] == nil { Task { _ = try? await self.completeDigests(blob.digest) } }
            Counter(label: "depot_fills_total", dimensions: [("outcome", "committed")]).increment()
            Timer(label: "depot_fill_duration_seconds").record(duration: ContinuousClock.now - started)
            logger.info(
                "fill committed",
                metadata: ["cloud": "\(fill.cloud)", "image": "\(image.id)", "blob": "\(blob.digest.hex)", "duration": "\(ContinuousClock.now - started)"])
        } catch {
            box.writer.abort()
            budget.settle(reserved: fill.expectedSize, committed: nil)
            fill.finish(.failed("\(error)"))
            Counter(label: "depot_fills_total", dimensions: [("outcome", "failed")]).increment()
            Counter(label: "depot_backend_errors_total", dimensions: [("operation", "fill")]).increment()
            logger.error("fill failed; nothing was committed", metadata: ["cloud": "\(fill.cloud)", "image": "\(image.id)", "error": "\(error)"])
        }
        fills.withLock { _ = $0.removeValue(forKey: key) }
    }

    /// Keys (`cloud|image`) of the running fills.
    func fillKeys() -> [String] { fills.withLock { Array($0.keys) } }

    /// The fill running for an image, if any.
    public func runningFill(cloud: String, imageID: String) -> Fill? {
        fills.withLock { $0["\(cloud)|\(imageID)"] }
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
