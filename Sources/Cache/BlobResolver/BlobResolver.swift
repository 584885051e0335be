import BlobStore
import Catalog
import Glance
import Synchronization

/// Which blob holds an image's bytes: the Catalog's mapping, or a blob Depot already holds
/// with the SHA-512 (or MD5) Glance published for the image (the same bytes under another
/// image id or cloud). What it resolved is kept in memory for the hit path.
final class BlobResolver: Sendable {
    private let store: BlobStore
    private let catalog: Catalog
    /// Where the Catalog's writes run.
    private let disk: DiskPools
    /// Image → blob; images are immutable once active, so this only changes when an image is
    /// forgotten or its blob goes.
    private let resolved = Mutex<[ImageKey: Digest]>([:])
    /// Advanced after every change to `resolved`, for answers kept past one hit.
    private let generation: KnownHitGeneration

    init(store: BlobStore, catalog: Catalog, disk: DiskPools, generation: KnownHitGeneration) {
        self.store = store
        self.catalog = catalog
        self.disk = disk
        self.generation = generation
    }

    /// The blob of an image, if Depot has it; a match by hash is recorded as the image's mapping.
    func resolve(_ authorized: AuthorizedImage) async throws -> Digest? {
        let image = authorized.image
        let key = authorized.key
        if let known = known(key), store.contains(known) { return known }
        // Writes sync the Catalog's WAL and may wait seconds for its lock: on the disk pool, not
        // the cooperative pool, whose few threads every request needs.
        let catalog = catalog
        if let mapped = try catalog.mapping(cloud: authorized.cloud, imageID: image.id) {
            if store.contains(mapped.digest) {
                remember(key, mapped.digest)
                return mapped.digest
            }
            _ = try await disk.run { () throws in try catalog.unmap(cloud: authorized.cloud, imageID: image.id) }
        }
        var match: BlobRecord?
        if image.osHashAlgo == "sha512", let hash = image.osHashValue {
            match = try catalog.blob(sha512: hash)
        } else if let md5 = image.checksum {
            match = try catalog.blob(md5: md5)
        }
        guard let match, UInt64(match.size) == image.size, store.contains(match.digest) else { return nil }
        let record = Self.record(cloud: authorized.cloud, image: image, digest: match.digest)
        try await disk.run { () throws in try catalog.map(record) }
        remember(key, match.digest)
        return match.digest
    }

    /// The blob an image resolved to, without I/O.
    func known(_ key: ImageKey) -> Digest? { resolved.withLock { $0[key] } }

    /// An image's blob, as a fill or an upload recorded it.
    func remember(_ key: ImageKey, _ digest: Digest) {
        if resolved.withLock({ $0.updateValue(digest, forKey: key) }) != digest { generation.advance() }
    }

    func forget(_ key: ImageKey) {
        if resolved.withLock({ $0.removeValue(forKey: key) }) != nil { generation.advance() }
    }

    /// Drops every image that resolved to an evicted or quarantined blob.
    func forgetBlob(_ digest: Digest) {
        resolved.withLock { table in table = table.filter { $0.value != digest } }
        generation.advance()
    }

    /// The Catalog's mapping of an image to its blob, with Glance's record of the image.
    static func record(cloud: String, image: GlanceImage, digest: Digest) -> ImageRecord {
        ImageRecord(
            cloud: cloud, imageID: image.id, sha256: digest.hex, status: image.status, checksum: image.checksum,
            osHashAlgo: image.osHashAlgo, osHashValue: image.osHashValue, size: image.size.map { Int64($0) }, owner: image.owner,
            visibility: image.visibility, name: image.name)
    }
}
