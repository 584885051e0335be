import BlobStore
import Catalog
import Glance
import Logging
import Metrics
import Synchronization

/// The single backend fill per image: claims it (`SingleFlight`), reserves its room in the
/// budget, and runs it as a job of the cache's `BackgroundWork` until its blob is committed
/// (or nothing is kept).
final class FillCoordinator: Sendable {
    private let store: BlobStore
    private let catalog: Catalog
    private let clouds: [String: GlanceClient]
    private let budget: DiskBudget
    private let resolver: BlobResolver
    private let digests: DigestPasses
    private let disk: DiskPools
    private let background: BackgroundWork
    private let logger: Logger
    private let fills: Mutex<SingleFlight<Fill, CheckedContinuation<FillClaim, Never>>>

    init(
        store: BlobStore, catalog: Catalog, clouds: [String: GlanceClient], maximumFills: Int, budget: DiskBudget, resolver: BlobResolver,
        digests: DigestPasses, disk: DiskPools, background: BackgroundWork, logger: Logger
    ) {
        self.store = store
        self.catalog = catalog
        self.clouds = clouds
        self.budget = budget
        self.resolver = resolver
        self.digests = digests
        self.disk = disk
        self.background = background
        self.logger = logger
        fills = Mutex(SingleFlight(limit: maximumFills))
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
    func fill(_ authorized: AuthorizedImage) async throws(CacheError) -> (fill: Fill, shared: Bool) {
        guard let client = clouds[authorized.cloud] else { throw .unknownCloud(authorized.cloud) }
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
        for evicted in try await budget.reserve(reserved, isFill: true) { resolver.forgetBlob(evicted) }
        var expectation = BlobExpectation(size: image.size)
        // MD5 is computed after the commit, off the fill's path, when SHA-512 proves the bytes.
        switch ImageCache.provingDigest(of: image) {
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
        // The blob is held from just before it is published until the image's row maps to it:
        // a copy already stored that the fill deduplicates against could otherwise be evicted
        // (a cache clear, say) between the commit and the Catalog rows, and the fill fail.
        // The same hold an upload takes (`UploadHold`), named for the fill.
        let hold = UploadHold(budget: budget, holder: .fill(key))
        defer { hold.release() }
        logger.info("fill started", metadata: ["cloud": "\(fill.cloud)", "image": "\(image.id)", "size": "\(fill.expectedSize)"])
        do {
            // The writer stages libcurl's chunks (tens of KiB) into 1 MiB slots: readers are
            // advanced each time a slot reaches the file. So the download hands over a batch
            // once it fills the slot being staged, not each chunk as it arrives: a backend
            // behind a slow link otherwise costs a task wake-up and a hop to the disk pool per
            // chunk, for bytes no reader can have sooner.
            _ = try await client.download(imageID: image.id, auth: .service, batch: { box.writer.bytesUntilNextSlot }) { buffer in
                let before = box.writer.bytesWritten
                try box.writer.write(buffer)
                if box.writer.bytesWritten != before { fill.advance(to: box.writer.bytesWritten) }
            }
            // fsync can take seconds for a large image: keep it off the cooperative pool.
            let result = await disk.run {
                Result { () throws(BlobStoreError) in
                    try box.writer.flush()
                    fill.advance(to: box.writer.bytesWritten)
                    return try box.writer.commit(beforePublishing: hold.hold)
                }
            }
            let blob = try result.get()
            // The Catalog's writes sync its WAL and may wait seconds for its lock (another
            // writer): off the cooperative pool as well, whose few threads every request needs.
            let catalog = catalog, record = BlobResolver.record(cloud: fill.cloud, image: image, digest: blob.digest)
            try await disk.run { () throws in
                try catalog.recordBlob(blob)
                try catalog.map(record)
            }
            resolver.remember(key, blob.digest)
            budget.settle(reserved: fill.expectedSize, committed: blob)
            hold.release()
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
    var running: [ImageKey] { fills.withLock { $0.running } }

    /// The fill running for an image, if any.
    func runningFill(cloud: String, imageID: String) -> Fill? {
        fills.withLock { $0.flight(ImageKey(cloud: cloud, imageID: imageID)) }
    }
}

/// Hands a writer to the fill's transfer thread; only that thread uses it until commit.
final class WriterBox: @unchecked Sendable {
    let writer: BlobWriter
    init(_ writer: BlobWriter) { self.writer = writer }
}
