import BlobStore
import Foundation
import Glance
import Synchronization

/// Streams bytes that arrive in async code (an upload's body) into a new blob: whole batches
/// are written and hashed on the disk pool, so the cooperative pool never blocks on the disk,
/// while the next batch arrives.
///
/// Memory is bounded by the stream's capacity plus two batches, whatever the body's size.
public final class BlobIngest: Sendable {
    private let stream = ByteStream(capacity: 8 << 20)
    private let outcome: Task<Result<CommittedBlob, BlobStoreError>, Never>
    /// Set by `discard`: why the written bytes are removed instead of committed.
    private let discardReason = DiscardReason()

    /// Bytes per hop to the disk pool: a few of the writer's 1 MiB slots, so its hash lanes
    /// are kept busy while the next batch arrives.
    static let batchSize = 4 << 20

    /// Opens a writer and starts writing what arrives.
    ///
    /// - Parameter beforeCommit: runs on a disk pool thread once the blob's name is known,
    ///   before it is published (see `BlobWriter.commit(beforePublishing:)`).
    public init(
        store: BlobStore, disk: DiskPools, expecting expectation: BlobExpectation, alsoCompute: Set<DigestAlgorithm>,
        beforeCommit: @escaping @Sendable (Digest) -> Void = { _ in }
    ) throws(BlobStoreError) {
        let writer = WriterBox(try store.makeWriter(expecting: expectation, alsoCompute: alsoCompute))
        let stream = self.stream
        let discardReason = self.discardReason
        outcome = Task {
            await Self.drain(stream, into: writer, disk: disk, discardReason: discardReason, beforeCommit: beforeCommit)
        }
    }

    private static func drain(
        _ stream: ByteStream, into writer: WriterBox, disk: DiskPools, discardReason: DiscardReason,
        beforeCommit: @escaping @Sendable (Digest) -> Void
    ) async -> Result<CommittedBlob, BlobStoreError> {
        do {
            var ended = false
            while !ended {
                // Gather a whole batch of chunks; write what there is at the end. The task
                // waits for the batch's bytes to be queued instead of waking for each chunk of
                // the body. The chunks are not joined: the writer copies them into its slots.
                var batch: [[UInt8]] = []
                var batched = 0
                while batched < batchSize {
                    guard let chunks = try await stream.next(upTo: batchSize - batched, atLeast: batchSize - batched) else {
                        ended = true
                        break
                    }
                    batch += chunks
                    for chunk in chunks { batched += chunk.count }
                }
                guard batched > 0 else { continue }
                let full = batch
                let written = await disk.run { Result { () throws(BlobStoreError) in for chunk in full { try writer.writer.write(chunk) } } }
                if case let .failure(error) = written {
                    stream.cancel()
                    await disk.run { writer.writer.abort() }
                    return .failure(error)
                }
            }
        } catch {
            // The sender gave up (client gone, bad body): nothing is kept.
            await disk.run { writer.writer.abort() }
            return .failure(.aborted(reason: "\(error)"))
        }
        if let reason = discardReason.value.withLock({ $0 }) {
            await disk.run { writer.writer.abort() }
            return .failure(.aborted(reason: reason))
        }
        return await disk.run { Result { () throws(BlobStoreError) in try writer.writer.commit(beforePublishing: beforeCommit) } }
    }

    /// Queues a chunk; suspends while the writer is behind. False once the writer has failed.
    public func send(_ chunk: [UInt8]) async -> Bool {
        await stream.send(chunk)
    }

    /// Ends the body and waits for the blob to be durable and in place.
    public func finish() async throws(BlobStoreError) -> CommittedBlob {
        stream.finish()
        return try await outcome.value.get()
    }

    /// Ends a body that was received whole but is refused: once every byte is written, the
    /// temporary file is removed instead of committed. A failure of the writer (a full disk)
    /// comes first, as it would have for an accepted body.
    ///
    /// - Throws: the writer's failure, if it failed before the end.
    public func discard(_ reason: String) async throws(BlobStoreError) {
        discardReason.value.withLock { $0 = reason }
        stream.finish()
        switch await outcome.value {
        case .success, .failure(.aborted): return
        case let .failure(error): throw error
        }
    }

    /// Abandons the body: the temporary file is removed, nothing is committed.
    public func abort(_ reason: String) async {
        stream.finish(throwing: IngestAborted(reason: reason))
        _ = await outcome.value
    }

    /// The writer's failure, if it already failed (so the sender can stop early).
    public func failure() async -> BlobStoreError? {
        if case let .failure(error) = await outcome.value { return error }
        return nil
    }
}

final class DiscardReason: Sendable {
    let value = Mutex<String?>(nil)
}

struct IngestAborted: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
