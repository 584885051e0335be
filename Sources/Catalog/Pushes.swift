import BlobStore
import Foundation
import GRDB

/// A row of the `push` table: bytes Depot accepted for an image and owes to its backend.
public struct PushRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "push"

    /// How the bytes reach the backend.
    public enum Method: String, Codable, Sendable {
        /// `PUT /v2/images/{id}/file`.
        case upload
        /// `PUT /v2/images/{id}/stage`, then `POST /v2/images/{id}/import` with glance-direct.
        case glanceDirect = "glance-direct"
    }

    /// Where a push stands.
    public enum State: String, Codable, Sendable, CaseIterable {
        /// Staged locally; waits for the client's import call.
        case staged
        /// Waits for its next attempt.
        case pending
        /// The backend holds the bytes and its hashes matched.
        case done
        /// Stopped for good; `lastError` says why.
        case failed

        /// Whether the bytes still exist nowhere else: such a blob must not be evicted.
        public var holdsBlob: Bool { self == .staged || self == .pending }
    }

    public var cloud: String
    public var imageID: String
    public var sha256: String
    public var method: Method
    public var state: State
    public var attempts: Int
    public var lastError: String?
    public var nextAttempt: Double
    public var createdAt: Double
    public var updatedAt: Double

    public init(cloud: String, imageID: String, digest: Digest, method: Method, state: State, at date: Date = Date()) {
        self.cloud = cloud
        self.imageID = imageID
        self.sha256 = digest.hex
        self.method = method
        self.state = state
        attempts = 0
        lastError = nil
        nextAttempt = date.timeIntervalSince1970
        createdAt = date.timeIntervalSince1970
        updatedAt = date.timeIntervalSince1970
    }

    public var digest: Digest { try! Digest.sha256(hex: sha256) }
}

extension Catalog {
    /// Records an accepted upload in one transaction: the blob, the image's mapping to it, and
    /// the push that owes it to the backend. A crash leaves all three or none.
    public func recordUpload(_ blob: CommittedBlob, image: ImageRecord, push: PushRecord) throws {
        try pool.write { db in
            try Self.upsert(blob, at: Date(), in: db)
            try image.save(db)
            try push.save(db)
        }
    }

    public func push(cloud: String, imageID: String) throws -> PushRecord? {
        try pool.read { db in try PushRecord.fetchOne(db, key: ["cloud": cloud, "imageID": imageID]) }
    }

    /// Pushes in the given states (all when empty), oldest first.
    public func pushes(in states: Set<PushRecord.State> = []) throws -> [PushRecord] {
        try pool.read { db in
            var request = PushRecord.order(Column("createdAt"))
            if !states.isEmpty { request = request.filter(states.map(\.rawValue).contains(Column("state"))) }
            return try request.fetchAll(db)
        }
    }

    /// The pushes of a blob's bytes, in any state.
    public func pushes(of digest: Digest) throws -> [PushRecord] {
        try pool.read { db in try PushRecord.filter(Column("sha256") == digest.hex).fetchAll(db) }
    }

    /// Forgets a push: the image is gone, nothing is owed any more.
    public func removePush(cloud: String, imageID: String) throws {
        _ = try pool.write { db in try PushRecord.deleteOne(db, key: ["cloud": cloud, "imageID": imageID]) }
    }

    /// Saves a push's new state.
    public func update(_ push: PushRecord) throws {
        var push = push
        push.updatedAt = Date().timeIntervalSince1970
        try pool.write { db in try push.save(db) }
    }

    /// Blobs that a staged or pending push still needs.
    public func heldDigests() throws -> Set<Digest> {
        let hexes = try pool.read { db in
            try String.fetchAll(db, sql: "SELECT DISTINCT sha256 FROM push WHERE state IN ('staged', 'pending')")
        }
        return Set(hexes.compactMap { try? Digest.sha256(hex: $0) })
    }
}
