import BlobStore
import Catalog
import Foundation
import Glance
import Logging
import Metrics
import Synchronization

/// What made a blob untrustworthy.
public enum IntegrityFinding: String, Sendable, CaseIterable {
    /// Its file is not the size the Catalog recorded (truncated, or grown, on disk).
    case size
    /// Its bytes no longer hash to its name.
    case digest
}

/// Counts of the integrity checks, for `depot cache stats` and `/metrics`.
public final class IntegrityStatistics: Sendable {
    private let verifiedBytes = Atomic<Int>(0)
    private let verifiedBlobs = Atomic<Int>(0)
    private let findings = Mutex<[IntegrityFinding: Int]>([:])
    private let quarantined = Mutex<[IntegrityFinding: Int]>([:])
    private let lostUploads = Atomic<Int>(0)

    private let verifiedCounter = Counter(label: "depot_scrub_verified_bytes_total")
    private let findingCounters = Dictionary(
        uniqueKeysWithValues: IntegrityFinding.allCases.map { ($0, Counter(label: "depot_scrub_findings_total", dimensions: [("kind", $0.rawValue)])) })
    private let quarantineCounters = Dictionary(
        uniqueKeysWithValues: IntegrityFinding.allCases.map { ($0, Counter(label: "depot_blobs_quarantined_total", dimensions: [("reason", $0.rawValue)])) })

    init() {}

    func recordVerified(bytes: UInt64) {
        verifiedBytes.add(Int(bytes), ordering: .relaxed)
        verifiedBlobs.add(1, ordering: .relaxed)
        verifiedCounter.increment(by: Int(bytes))
    }

    func recordScrubFinding(_ finding: IntegrityFinding) {
        findings.withLock { $0[finding, default: 0] += 1 }
        findingCounters[finding]?.increment()
    }

    func recordQuarantine(_ finding: IntegrityFinding, lostUploads lost: Int) {
        quarantined.withLock { $0[finding, default: 0] += 1 }
        quarantineCounters[finding]?.increment()
        lostUploads.add(lost, ordering: .relaxed)
    }

    public var snapshot: [String: Any] {
        let findings = findings.withLock { $0 }
        let quarantined = quarantined.withLock { $0 }
        return [
            "scrub_verified_bytes": verifiedBytes.load(ordering: .relaxed),
            "scrub_verified_blobs": verifiedBlobs.load(ordering: .relaxed),
            "scrub_findings": Dictionary(uniqueKeysWithValues: IntegrityFinding.allCases.map { ($0.rawValue, findings[$0] ?? 0) }),
            "quarantined_blobs": Dictionary(uniqueKeysWithValues: IntegrityFinding.allCases.map { ($0.rawValue, quarantined[$0] ?? 0) }),
            "uploads_lost_to_damage": lostUploads.load(ordering: .relaxed),
        ]
    }
}

extension ImageCache {
    /// Opens a blob to serve a hit. A blob is trusted only while it matches what the Catalog
    /// recorded: its file must have the recorded size, and that must be the image's size. A
    /// blob whose size differs from the record is quarantined (the event loop's `beginHit`
    /// leaves that to this path).
    ///
    /// - Returns: nil when the blob is gone or untrustworthy: the request goes on as a miss.
    public func openForHit(_ digest: Digest, size expected: UInt64) async -> BlobReader? {
        // One fstat of the kept reader's file: that reader, or a new one when the file changed.
        guard let reader = try? store.openKept(digest) else { return nil }
        var recorded = budget.recordedSize(of: digest)
        if recorded == nil, let row = try? catalog.blob(digest) { recorded = UInt64(row.size) }
        guard let recorded else { return nil }
        guard reader.size == recorded else {
            await quarantine(digest, finding: .size, detail: "the file holds \(reader.size) bytes, the catalog recorded \(recorded)")
            return nil
        }
        return reader.size == expected ? reader : nil
    }

    /// Takes a blob that no longer matches the Catalog out of service: its file moves to
    /// `quarantine/`, no image maps to it any more (the next request for one is a miss, which
    /// refills it), and it is counted (`depot_blobs_quarantined_total`).
    ///
    /// Acknowledged uploads whose push still needed these bytes are lost: their pushes fail
    /// with the reason (`depot pushes ls`), and each is counted in
    /// `depot_push_failures_after_ack_total` and logged as critical.
    public func quarantine(_ digest: Digest, finding: IntegrityFinding, detail: String) async {
        // Its Catalog writes sync the WAL and may wait seconds for the lock: on the disk pool,
        // not the cooperative pool, whose few threads every request needs.
        await disk.run { self.quarantineNow(digest, finding: finding, detail: detail) }
    }

    /// `quarantine` on the calling thread, which it may block.
    private func quarantineNow(_ digest: Digest, finding: IntegrityFinding, detail: String) {
        guard budget.withdraw(digest) else { return }
        defer { budget.endWithdrawal(digest) }
        var movedTo = "nowhere (already gone)"
        do { movedTo = try store.quarantine(digest) } catch {
            if case .notFound = error {} else { logger.error("cannot move a damaged blob to quarantine", metadata: ["blob": "\(digest.hex)", "error": "\(error)"]) }
        }
        forgetBlob(digest)
        var lost = 0
        do {
            for var push in try catalog.pushes(of: digest) where push.state.holdsBlob {
                push.state = .failed
                push.lastError = "Depot's copy of the uploaded bytes was damaged on disk before the push (\(detail)); nothing can be pushed: upload the image again"
                try catalog.update(push)
                pushes.countFailureAfterAcknowledgement()
                logger.critical(
                    "an acknowledged upload's bytes were damaged on disk before its push; the image must be uploaded again",
                    metadata: ["cloud": "\(push.cloud)", "image": "\(push.imageID)", "blob": "\(digest.hex)", "finding": "\(detail)"])
                pushes.settlement.settled(push)
                lost += 1
            }
            for image in try catalog.images(of: digest) { forgetter.forget(ImageKey(cloud: image.cloud, imageID: image.imageID)) }
            // Failed pushes keep the row that names their bytes, so the operator sees them.
            if try catalog.pushes(of: digest).isEmpty { try catalog.removeBlob(digest) } else { try catalog.unmapAll(digest) }
        } catch {
            logger.error("cannot record a quarantined blob in the catalog", metadata: ["blob": "\(digest.hex)", "error": "\(error)"])
        }
        integrity.recordQuarantine(finding, lostUploads: lost)
        logger.error(
            "blob no longer matches the catalog; quarantined", metadata: ["blob": "\(digest.hex)", "finding": "\(detail)", "moved_to": "\(movedTo)"])
    }

    /// The SHA-256 of a byte range of a fill's bytes, and the byte just after the range; read
    /// off the cooperative pool.
    ///
    /// Reads the fill's own file (the inode it wrote and committed), not the blob by name: under
    /// budget pressure a blob can be evicted the moment after its commit, and a client that
    /// waited for the verdict must still get its last byte.
    /// - Throws: `CacheError.fillFailed` before the fill committed; `BlobStoreError` when the
    ///   range cannot be read.
    public func hashRange(of fill: Fill, _ range: Range<UInt64>) async throws -> (Digest, UInt8) {
        guard case let .committed(blob)? = fill.outcome else {
            throw CacheError.fillFailed(imageID: fill.imageID, reason: "the fill has not committed; its bytes are not verified")
        }
        // The fill's own descriptor, owned (and closed) by the reader: the same inode as the
        // committed blob, whatever an eviction did to the blob's name since.
        let reader = BlobReader(digest: blob.digest, path: fill.temporaryPath, fd: try fill.openForReading(), size: blob.size)
        return try await disk.run {
            Result { () throws(BlobStoreError) -> (Digest, UInt8) in
                let hasher = DigestHasher(.sha256)
                try reader.forEachChunk(of: range) { hasher.update($0) }
                return (hasher.finish(), try reader.read(range.upperBound..<(range.upperBound + 1))[0])
            }
        }.get()
    }
}

/// Re-hashes committed blobs in the background, least recently verified first, at a bounded
/// rate and low CPU priority, the way Ceph's deep scrub and ZFS's scrub look for bit rot that
/// no read has hit yet.
///
/// A blob that no longer hashes to its name (or whose size changed) is quarantined; an image
/// that mapped to it is fetched again with Depot's service credentials, unless its bytes were
/// an upload not yet pushed, which is lost and reported (see `ImageCache.quarantine`).
public final class Scrubber: Sendable {
    let cache: ImageCache
    /// Bytes hashed per second at most; 0 turns the scrub off.
    public let bytesPerSecond: UInt64
    /// A blob verified more recently than this is not scrubbed again yet.
    public let interval: Duration
    let logger: Logger

    public init(cache: ImageCache, bytesPerSecond: UInt64, interval: Duration, logger: Logger = Logger(label: "depot.scrub")) {
        self.cache = cache
        self.bytesPerSecond = bytesPerSecond
        self.interval = interval
        self.logger = logger
    }

    /// Scrubs until cancelled.
    public func run() async {
        guard bytesPerSecond > 0 else { return }
        logger.info("scrub started", metadata: ["rate_bytes_per_second": "\(bytesPerSecond)", "interval": "\(interval)"])
        while !Task.isCancelled {
            let wait = await pass()
            try? await Task.sleep(for: wait)
        }
    }

    /// Scrubs the blobs that are due (up to 32); returns how long to wait before looking again.
    public func pass() async -> Duration {
        let due = Date().timeIntervalSince1970 - Double(interval.components.seconds)
        let batch: [BlobRecord]
        do { batch = try cache.catalog.blobsToScrub(limit: 32) } catch {
            logger.error("cannot read the catalog; the scrub retries in a minute", metadata: ["error": "\(error)"])
            return .seconds(60)
        }
        for blob in batch {
            let last = blob.verifiedAt ?? blob.createdAt
            guard last <= due else { return .seconds(max(1, min(3600, last - due))) }
            if Task.isCancelled { return .zero }
            await scrub(blob)
        }
        return batch.isEmpty ? .seconds(60) : .zero
    }

    /// Re-hashes one blob; quarantines and refetches it when it no longer matches.
    func scrub(_ blob: BlobRecord) async {
        let digest = blob.digest
        let rate = bytesPerSecond
        let outcome = await cache.disk.runInBackground { (flag: CancellationFlag) in
            Result { () throws(BlobStoreError) -> Digest? in
                let reader = try self.cache.store.open(digest)
                guard reader.size == UInt64(blob.size) else { return nil }
                return try reader.computeDigestInBackground(.sha256, bytesPerSecond: rate, isCancelled: { flag.isCancelled })
            }
        }
        let finding: IntegrityFinding
        let detail: String
        switch outcome {
        case let .success(actual?) where actual == digest:
            // Nobody waits for it; it syncs the WAL and may wait for the lock.
            let catalog = cache.catalog
            _ = await cache.disk.runInBackground { try? catalog.recordVerified(digest) }
            cache.integrity.recordVerified(bytes: UInt64(blob.size))
            return
        case let .success(actual?):
            (finding, detail) = (.digest, "the bytes hash to \(actual.hex)")
        case .success(nil):
            (finding, detail) = (.size, "the file is not the \(blob.size) bytes the catalog recorded")
        case .failure(.notFound), .failure(.aborted):
            return
        case let .failure(error):
            logger.error("cannot scrub a blob", metadata: ["blob": "\(digest.hex)", "error": "\(error)"])
            return
        }
        cache.integrity.recordScrubFinding(finding)
        let images = (try? cache.catalog.images(of: digest)) ?? []
        let owed = Set(((try? cache.catalog.pushes(of: digest)) ?? []).filter { $0.state.holdsBlob }.map { ImageKey(cloud: $0.cloud, imageID: $0.imageID) })
        await cache.quarantine(digest, finding: finding, detail: detail)
        for image in images where !owed.contains(ImageKey(cloud: image.cloud, imageID: image.imageID)) {
            do {
                _ = try await cache.prefetch(cloud: image.cloud, imageID: image.imageID)
                logger.notice("refetching an image whose blob was quarantined", metadata: ["cloud": "\(image.cloud)", "image": "\(image.imageID)"])
                break
            } catch {
                logger.warning("cannot refetch an image whose blob was quarantined", metadata: ["cloud": "\(image.cloud)", "image": "\(image.imageID)", "error": "\(error)"])
            }
        }
    }
}
