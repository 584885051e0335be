import BlobStore
import Foundation
import GRDB

/// The embedded SQLite index (WAL): what blobs exist with which digests and use, and which
/// image of which cloud maps to which blob.
///
/// The blob store is the truth about bytes; the Catalog can be rebuilt from it. Writes are
/// short transactions; reads run concurrently with them (WAL).
public final class Catalog: Sendable {
    let pool: DatabasePool
    public let path: String

    /// Opens (creating and migrating if needed) the catalog at `path`.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        self.path = path
        pool = try DatabasePool(path: path, configuration: configuration)
        // Every commit is on stable storage before the write returns: an upload's 204, a push
        // marked done or failed, a fill counted as cached and an operator's pin or evict are
        // all answered after their transaction. In WAL mode NORMAL syncs the WAL only at
        // checkpoints, so a transaction committed under it "might roll back following a power
        // loss or system crash" (sqlite.org/pragma.html#pragma_synchronous); FULL syncs the WAL
        // at every commit (sqlite.org/wal.html). It is set on the pool's one writer connection,
        // for every write, so none can forget it: the others (hits, batched once a second;
        // digests computed after the fact) are few, and an fdatasync of a few WAL pages is
        // what each costs (benchmarks/results/upload-*.md). Set here, after the pool opened:
        // GRDB's DatabasePool sets NORMAL itself when it turns WAL on, after
        // `prepareDatabase` has run (GRDB Database.setUpWALMode), so a pragma there is undone.
        let level = try pool.writeWithoutTransaction { db -> Int? in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous")
        }
        guard level == 2 else { throw DatabaseError(message: "PRAGMA synchronous = FULL did not hold on \(path) (reads \(level.map(String.init) ?? "nothing"))") }
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "blob") { t in
                t.primaryKey("sha256", .text)
                t.column("size", .integer).notNull()
                t.column("sha512", .text).indexed()
                t.column("md5", .text).indexed()
                t.column("createdAt", .double).notNull()
                t.column("lastAccess", .double).notNull()
                t.column("hits", .integer).notNull().defaults(to: 0)
                t.column("pinned", .boolean).notNull().defaults(to: false)
            }
            try db.create(table: "image") { t in
                t.column("cloud", .text).notNull()
                t.column("imageID", .text).notNull()
                t.column("sha256", .text).notNull().indexed().references("blob", onDelete: .cascade)
                t.column("status", .text)
                t.column("checksum", .text)
                t.column("osHashAlgo", .text)
                t.column("osHashValue", .text)
                t.column("size", .integer)
                t.column("owner", .text)
                t.column("visibility", .text)
                t.column("name", .text)
                t.column("updatedAt", .double).notNull()
                t.primaryKey(["cloud", "imageID"])
            }
        }
        migrator.registerMigration("v2-pushes") { db in
            // One row per image whose bytes Depot took and owes to a backend.
            try db.create(table: "push") { t in
                t.column("cloud", .text).notNull()
                t.column("imageID", .text).notNull()
                t.column("sha256", .text).notNull().indexed().references("blob", onDelete: .cascade)
                t.column("method", .text).notNull()
                t.column("state", .text).notNull().indexed()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("lastError", .text)
                t.column("nextAttempt", .double).notNull()
                t.column("createdAt", .double).notNull()
                t.column("updatedAt", .double).notNull()
                t.primaryKey(["cloud", "imageID"])
            }
        }
        migrator.registerMigration("scrub-verified-at") { db in
            // When the blob's bytes last hashed to its name (nil: at its commit only).
            try db.alter(table: "blob") { t in t.add(column: "verifiedAt", .double) }
        }
        migrator.registerMigration("format-virtual-size") { db in
            // The virtual size Glance computes from an upload's bytes (its format inspection),
            // recorded by Depot's own inspection when it takes an upload; null where Glance
            // records none.
            try db.alter(table: "image") { t in t.add(column: "virtualSize", .integer) }
        }
        return migrator
    }

    /// Checks that the database takes a write transaction: SQLite opens a file it may not
    /// write (say, one a root-run fsck left owned by root) read-only without a word, and the
    /// first upload would fail instead of the start.
    public func checkWritable() throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM blob WHERE 0") }
    }

    /// Checks that the database answers (for readiness probes).
    public func ping() throws {
        _ = try pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }

    // MARK: Blobs

    /// Records a committed blob (or refreshes its known digests).
    public func recordBlob(_ blob: CommittedBlob, at date: Date = Date()) throws {
        try pool.write { db in try Self.upsert(blob, at: date, in: db) }
    }

    static func upsert(_ blob: CommittedBlob, at date: Date, in db: Database) throws {
        let record = BlobRecord(
            sha256: blob.digest.hex, size: Int64(blob.size), sha512: blob.digests[.sha512]?.hex, md5: blob.digests[.md5]?.hex,
            createdAt: date.timeIntervalSince1970, lastAccess: date.timeIntervalSince1970, hits: 0, pinned: false)
        if var existing = try BlobRecord.fetchOne(db, key: record.sha256) {
            existing.sha512 = existing.sha512 ?? record.sha512
            existing.md5 = existing.md5 ?? record.md5
            try existing.update(db)
        } else {
            try record.insert(db)
        }
    }

    /// Records digests computed after the blob was committed (uploads hash SHA-512 and MD5
    /// after they are acknowledged), on the blob and on the images that map to it.
    public func recordDigests(of digest: Digest, sha512: String, md5: String) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE blob SET sha512 = ?, md5 = ? WHERE sha256 = ?", arguments: [sha512, md5, digest.hex])
            try db.execute(
                sql: "UPDATE image SET osHashAlgo = 'sha512', osHashValue = ?, checksum = ? WHERE sha256 = ? AND osHashValue IS NULL",
                arguments: [sha512, md5, digest.hex])
        }
    }

    public func blob(_ digest: Digest) throws -> BlobRecord? {
        try pool.read { db in try BlobRecord.fetchOne(db, key: digest.hex) }
    }

    /// A blob whose SHA-512 (Glance's `os_hash_value`) is known to be `hex`.
    public func blob(sha512 hex: String) throws -> BlobRecord? {
        try pool.read { db in try BlobRecord.filter(Column("sha512") == hex.lowercased()).fetchOne(db) }
    }

    /// A blob whose MD5 (Glance's `checksum`) is known to be `hex`.
    public func blob(md5 hex: String) throws -> BlobRecord? {
        try pool.read { db in try BlobRecord.filter(Column("md5") == hex.lowercased()).fetchOne(db) }
    }

    public func allBlobs() throws -> [BlobRecord] {
        try pool.read { db in try BlobRecord.order(Column("lastAccess")).fetchAll(db) }
    }

    /// Counts hits and moves the blob's last access forward (never back).
    public func touch(_ digest: Digest, hits: Int = 1, at date: Date = Date()) throws {
        try touch([(digest, hits, date)])
    }

    /// Records a batch of hits in one transaction: the server collects them in memory so a
    /// hit never waits on SQLite.
    public func touch(_ batch: [(digest: Digest, hits: Int, at: Date)]) throws {
        guard !batch.isEmpty else { return }
        try pool.write { db in
            for (digest, hits, date) in batch {
                try db.execute(
                    sql: "UPDATE blob SET hits = hits + ?, lastAccess = MAX(lastAccess, ?) WHERE sha256 = ?",
                    arguments: [hits, date.timeIntervalSince1970, digest.hex])
            }
        }
    }

    /// Pins a blob (never evicted) or unpins it.
    public func setPinned(_ digest: Digest, _ pinned: Bool) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE blob SET pinned = ? WHERE sha256 = ?", arguments: [pinned, digest.hex])
        }
    }

    /// Forgets a blob and every image mapped to it.
    public func removeBlob(_ digest: Digest) throws {
        _ = try pool.write { db in try BlobRecord.deleteOne(db, key: digest.hex) }
    }

    /// Blobs the scrub should look at next: least recently verified first (a blob never
    /// scrubbed counts as verified when it was created).
    public func blobsToScrub(limit: Int) throws -> [BlobRecord] {
        try pool.read { db in
            try BlobRecord.fetchAll(db, sql: "SELECT * FROM blob ORDER BY COALESCE(verifiedAt, createdAt) LIMIT ?", arguments: [limit])
        }
    }

    /// Records that the scrub found the blob intact.
    public func recordVerified(_ digest: Digest, at date: Date = Date()) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE blob SET verifiedAt = ? WHERE sha256 = ?", arguments: [date.timeIntervalSince1970, digest.hex])
        }
    }

    /// Drops every image's mapping to a blob (its bytes went bad), keeping the blob's row and
    /// the pushes that name it.
    public func unmapAll(_ digest: Digest) throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM image WHERE sha256 = ?", arguments: [digest.hex]) }
    }

    // MARK: Images

    /// The blob an image of a cloud is known to hold.
    public func mapping(cloud: String, imageID: String) throws -> ImageRecord? {
        try pool.read { db in try ImageRecord.fetchOne(db, key: ["cloud": cloud, "imageID": imageID]) }
    }

    /// Records that an image holds a blob's bytes (Glance images are immutable once active).
    public func map(_ image: ImageRecord) throws {
        try pool.write { db in try image.save(db) }
    }

    /// Drops a mapping (the image was deleted or deactivated upstream).
    @discardableResult
    public func unmap(cloud: String, imageID: String) throws -> Bool {
        try pool.write { db in try ImageRecord.deleteOne(db, key: ["cloud": cloud, "imageID": imageID]) }
    }

    public func allImages() throws -> [ImageRecord] {
        try pool.read { db in try ImageRecord.order(Column("cloud"), Column("imageID")).fetchAll(db) }
    }

    public func images(of digest: Digest) throws -> [ImageRecord] {
        try pool.read { db in try ImageRecord.filter(Column("sha256") == digest.hex).fetchAll(db) }
    }
}

/// A row of the `blob` table.
public struct BlobRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "blob"

    public var sha256: String
    public var size: Int64
    public var sha512: String?
    public var md5: String?
    public var createdAt: Double
    public var lastAccess: Double
    public var hits: Int64
    public var pinned: Bool
    /// When the scrub last found the bytes intact (seconds since 1970); nil until its first
    /// pass (the commit itself verified them).
    public var verifiedAt: Double? = nil

    public var digest: Digest { try! Digest.sha256(hex: sha256) }

    /// The blob as a writer would have reported it, with the digests the Catalog knows.
    public func committed(path: String) -> CommittedBlob {
        var digests: [DigestAlgorithm: Digest] = [.sha256: digest]
        if let sha512, let value = try? Digest(algorithm: .sha512, hex: sha512) { digests[.sha512] = value }
        if let md5, let value = try? Digest(algorithm: .md5, hex: md5) { digests[.md5] = value }
        return CommittedBlob(digest: digest, size: UInt64(size), digests: digests, deduplicated: true, path: path)
    }
}

/// A row of the `image` table: one image of one cloud and the blob that holds its bytes.
public struct ImageRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "image"

    public var cloud: String
    public var imageID: String
    public var sha256: String
    public var status: String?
    public var checksum: String?
    public var osHashAlgo: String?
    public var osHashValue: String?
    public var size: Int64?
    public var owner: String?
    public var visibility: String?
    public var name: String?
    public var updatedAt: Double
    /// Glance's `virtual_size` for the image's bytes, as Depot's inspection of an upload
    /// computed it; nil where Glance records none or the record came from elsewhere.
    public var virtualSize: Int64?

    public init(
        cloud: String, imageID: String, sha256: String, status: String? = nil, checksum: String? = nil, osHashAlgo: String? = nil,
        osHashValue: String? = nil, size: Int64? = nil, owner: String? = nil, visibility: String? = nil, name: String? = nil,
        updatedAt: Double = Date().timeIntervalSince1970, virtualSize: Int64? = nil
    ) {
        self.cloud = cloud
        self.imageID = imageID
        self.sha256 = sha256
        self.status = status
        self.checksum = checksum
        self.osHashAlgo = osHashAlgo
        self.osHashValue = osHashValue
        self.size = size
        self.owner = owner
        self.visibility = visibility
        self.name = name
        self.updatedAt = updatedAt
        self.virtualSize = virtualSize
    }

    public var digest: Digest { try! Digest.sha256(hex: sha256) }
}
