import BlobStore
import Catalog
import DepotTestSupport
import Foundation
import Testing

@Suite struct CatalogTests {
    let dir = TemporaryDirectory("depot-catalog")

    func blob(_ text: String) throws -> CommittedBlob {
        let store = try BlobStore(dataDirectory: dir.path + "/data")
        let writer = try store.makeWriter(alsoCompute: [.sha512, .md5])
        try writer.write(Array(text.utf8))
        return try writer.commit()
    }

    @Test func blobsAreFoundByEachDigest() throws {
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        let committed = try blob("hello catalog")
        try catalog.recordBlob(committed)
        let record = try #require(try catalog.blob(committed.digest))
        #expect(record.size == Int64(committed.size))
        #expect(record.sha512 == committed.digests[.sha512]?.hex)
        #expect(try catalog.blob(sha512: committed.digests[.sha512]!.hex.uppercased())?.sha256 == committed.digest.hex)
        #expect(try catalog.blob(md5: committed.digests[.md5]!.hex)?.sha256 == committed.digest.hex)
        #expect(try catalog.blob(md5: String(repeating: "0", count: 32)) == nil)
    }

    /// A catalog written before the virtual size existed gains the column, keeps its rows
    /// (without a virtual size), and records the virtual size of new ones.
    @Test func theVirtualSizeColumnIsAddedToAnOlderCatalog() async throws {
        let path = dir.path + "/old.sqlite"
        let committed = try blob("older bytes")
        do {
            let catalog = try Catalog(path: path)
            try catalog.recordBlob(committed)
        }
        // Back to the schema before "format-virtual-size", with a row written then.
        let downgrade = """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.execute("ALTER TABLE image DROP COLUMN virtualSize")
            db.execute("DELETE FROM grdb_migrations WHERE identifier = 'format-virtual-size'")
            db.execute("INSERT INTO image (cloud, imageID, sha256, status, size, updatedAt) VALUES ('a_R1', 'old', ?, 'active', 11, 0)", (sys.argv[2],))
            db.commit()
            """
        _ = try await run("/usr/bin/env", ["python3", "-c", downgrade, path, committed.digest.hex])
        let catalog = try Catalog(path: path)
        #expect(try catalog.mapping(cloud: "a_R1", imageID: "old")?.virtualSize == nil)
        #expect(try catalog.mapping(cloud: "a_R1", imageID: "old")?.size == 11)
        try catalog.map(ImageRecord(cloud: "a_R1", imageID: "new", sha256: committed.digest.hex, status: "queued", size: 11, virtualSize: 1 << 34))
        #expect(try Catalog(path: path).mapping(cloud: "a_R1", imageID: "new")?.virtualSize == 1 << 34)
    }

    @Test func mappingsAreKeptPerCloudAndSurviveReopening() throws {
        let path = dir.path + "/catalog.sqlite"
        let committed = try blob("shared bytes")
        do {
            let catalog = try Catalog(path: path)
            try catalog.recordBlob(committed)
            try catalog.map(ImageRecord(cloud: "a_R1", imageID: "img-1", sha256: committed.digest.hex, status: "active", size: 12))
            try catalog.map(ImageRecord(cloud: "b_R2", imageID: "img-9", sha256: committed.digest.hex, status: "active", size: 12))
        }
        let reopened = try Catalog(path: path)
        #expect(try reopened.mapping(cloud: "a_R1", imageID: "img-1")?.digest == committed.digest)
        #expect(try reopened.mapping(cloud: "b_R1", imageID: "img-1") == nil)
        #expect(Set(try reopened.images(of: committed.digest).map(\.cloud)) == ["a_R1", "b_R2"])
        #expect(try reopened.unmap(cloud: "a_R1", imageID: "img-1"))
        #expect(try !reopened.unmap(cloud: "a_R1", imageID: "img-1"))
        #expect(try reopened.images(of: committed.digest).count == 1)
    }

    @Test func removingABlobRemovesItsMappings() throws {
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        let committed = try blob("to be evicted")
        try catalog.recordBlob(committed)
        try catalog.map(ImageRecord(cloud: "a_R1", imageID: "img-1", sha256: committed.digest.hex))
        try catalog.removeBlob(committed.digest)
        #expect(try catalog.blob(committed.digest) == nil)
        #expect(try catalog.mapping(cloud: "a_R1", imageID: "img-1") == nil)
    }

    @Test func aMappingNeedsItsBlob() throws {
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        #expect(throws: (any Error).self) {
            try catalog.map(ImageRecord(cloud: "a_R1", imageID: "img-1", sha256: String(repeating: "a", count: 64)))
        }
    }

    @Test func touchesCountHitsAndOnlyMoveForward() throws {
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        let committed = try blob("popular")
        try catalog.recordBlob(committed, at: Date(timeIntervalSince1970: 1000))
        try catalog.touch(committed.digest, hits: 2, at: Date(timeIntervalSince1970: 2000))
        try catalog.touch(committed.digest, hits: 1, at: Date(timeIntervalSince1970: 1500))
        let record = try #require(try catalog.blob(committed.digest))
        #expect(record.hits == 3)
        #expect(record.lastAccess == 2000)
    }
}
