import BlobStore
import Catalog
import Logging
import Synchronization

/// Completes a blob's SHA-512 and MD5 after its commit, once per blob however many callers wait.
///
/// Uploads are acknowledged after SHA-256 (the blob's name) and fsync: on two cores the three
/// digests in the same pass cost a third of the upload speed. A fill proven by SHA-512 lacks
/// only MD5. The missing ones are computed right after, on low-priority threads that read the
/// blob back from the page cache, as jobs of the cache's `BackgroundWork`.
final class DigestPasses: Sendable {
    private let store: BlobStore
    private let catalog: Catalog
    private let disk: DiskPools
    private let background: BackgroundWork
    private let logger: Logger
    /// Running passes, by blob.
    private let running = Mutex<[Digest: SharedOutcome<BlobRecord>]>([:])

    init(store: BlobStore, catalog: Catalog, disk: DiskPools, background: BackgroundWork, logger: Logger) {
        self.store = store
        self.catalog = catalog
        self.disk = disk
        self.background = background
        self.logger = logger
    }

    /// The blob's record with its SHA-512 and MD5, computed now if they are missing.
    func complete(_ digest: Digest) async throws -> BlobRecord {
        if let record = try catalog.blob(digest), record.sha512 != nil, record.md5 != nil { return record }
        let (outcome, isNew) = running.withLock { running -> (SharedOutcome<BlobRecord>, Bool) in
            if let pass = running[digest] { return (pass, false) }
            let outcome = SharedOutcome<BlobRecord>()
            running[digest] = outcome
            return (outcome, true)
        }
        if isNew {
            let pass = { @Sendable [self] in
                let result: Result<BlobRecord, any Error>
                do { result = .success(try await compute(digest)) } catch { result = .failure(error) }
                running.withLock { _ = $0.removeValue(forKey: digest) }
                outcome.finish(result)
            }
            // Refused once shutdown has ended the background work: the caller runs it itself.
            if !background.submit(pass) { await pass() }
        }
        return try await outcome.value
    }

    /// Completes a blob's digests in the background; nobody waits for them now.
    func completeLater(_ digest: Digest) {
        background.submit { [self] in _ = try? await complete(digest) }
    }

    /// Computes the SHA-512 and MD5 a blob's record lacks and records them.
    private func compute(_ digest: Digest) async throws -> BlobRecord {
        let started = ContinuousClock.now
        // Only what is missing (a fill verified by SHA-512 lacks only MD5).
        let known = try catalog.blob(digest)
        async let sha512 = known?.sha512 != nil ? nil : hash(digest, .sha512)
        async let md5 = known?.md5 != nil ? nil : hash(digest, .md5)
        let (sha512Value, md5Value) = try await (sha512, md5)
        let (catalog, sha512Hex, md5Hex) = (catalog, sha512Value?.hex ?? known?.sha512 ?? "", md5Value?.hex ?? known?.md5 ?? "")
        // Where the hashing ran: the write syncs the WAL and may wait seconds for the lock.
        try await disk.runInBackground { () throws in try catalog.recordDigests(of: digest, sha512: sha512Hex, md5: md5Hex) }
        logger.debug("digests computed", metadata: ["blob": "\(digest.hex)", "duration": "\(ContinuousClock.now - started)"])
        guard let record = try catalog.blob(digest) else { throw BlobStoreError.notFound(digest) }
        return record
    }

    private func hash(_ digest: Digest, _ algorithm: DigestAlgorithm) async throws -> Digest {
        try await disk.runInBackground { [store] in
            // Behind request work: a hit or an upload never waits for this pass.
            Result { () throws(BlobStoreError) in try store.open(digest).computeDigestInBackground(algorithm) }
        }.get()
    }
}
