import BlobStore
import Foundation
import Glance
import Synchronization

/// Streams bytes that arrive in async code (an upload's body) into a new blob, writing and
/// hashing on a thread of its own so the cooperative pool never blocks on the disk.
///
/// Memory is bounded by the channel's capacity plus one batch, whatever the body's size.
public final class BlobIngest: Sendable {
    private let channel = ByteChannel(capacity: 8 << 20)
    private let outcome: Task<Result<CommittedBlob, BlobStoreError>, Never>
    /// Set by `discard`: why the written bytes are removed instead of committed.
    private let discardReason = DiscardReason()

    /// Bytes per write: large enough that the writer hashes its digests in parallel lanes.
    static let batchSize = 4 << 20

    /// Opens a writer and starts its thread.
    ///
    /// - Parameter beforeCommit: runs on the writer's thread once the blob's name is known,
    ///   before it is published (see `BlobWriter.commit(beforePublishing:)`).
    public init(
        store: BlobStore, expecting expectation: BlobExpectation, alsoCompute: Set<DigestAlgorithm>,
        beforeCommit: @escaping @Sendable (Digest) -> Void = { _ in }
    ) throws(BlobStoreError) {
        let writer = WriterBox(try store.makeWriter(expecting: expectation, alsoCompute: alsoCompute))
        let channel = self.channel
        let discardReason = self.discardReason
        outcome = Task {
            await TransferThreads.run { _ in Self.drain(channel, into: writer.writer, discardReason: discardReason, beforeCommit: beforeCommit) }
        }
    }

    private static func drain(
        _ channel: ByteChannel, into writer: BlobWriter, discardReason: DiscardReason, beforeCommit: (Digest) -> Void
    ) -> Result<CommittedBlob, BlobStoreError> {
        let batch = UnsafeMutableRawBufferPointer.allocate(byteCount: batchSize, alignment: 64)
        defer { batch.deallocate() }
        do {
            while true {
                // Fill a whole batch when bytes are queued; write what there is at the end.
                var filled = 0
                var ended = false
                repeat {
                    let n = try channel.take(into: UnsafeMutableRawBufferPointer(rebasing: batch[filled...]))
                    if n == 0 { ended = true } else { filled += n }
                } while !ended && filled < batchSize
                if filled > 0 {
                    let result = Result { () throws(BlobStoreError) in try writer.write(UnsafeRawBufferPointer(rebasing: batch[..<filled])) }
                    if case let .failure(error) = result {
                        channel.cancelConsumer()
                        return .failure(error)
                    }
                }
                if ended {
                    if let reason = discardReason.value.withLock({ $0 }) {
                        writer.abort()
                        return .failure(.aborted(reason: reason))
                    }
                    return Result { () throws(BlobStoreError) in try writer.commit(beforePublishing: beforeCommit) }
                }
            }
        } catch {
            // The sender gave up (client gone, bad body): nothing is kept.
            writer.abort()
            return .failure(.aborted(reason: "\(error)"))
        }
    }

    /// Queues a chunk; suspends while the writer is behind. False once the writer has failed.
    public func send(_ chunk: [UInt8]) async -> Bool {
        await channel.send(chunk)
    }

    /// Ends the body and waits for the blob to be durable and in place.
    public func finish() async throws(BlobStoreError) -> CommittedBlob {
        channel.finish()
        return try await outcome.value.get()
    }

    /// Ends a body that was received whole but is refused: once every byte is written, the
    /// temporary file is removed instead of committed. A failure of the writer (a full disk)
    /// comes first, as it would have for an accepted body.
    ///
    /// - Throws: the writer's failure, if it failed before the end.
    public func discard(_ reason: String) async throws(BlobStoreError) {
        discardReason.value.withLock { $0 = reason }
        channel.finish()
        switch await outcome.value {
        case .success, .failure(.aborted): return
        case let .failure(error): throw error
        }
    }

    /// Abandons the body: the temporary file is removed, nothing is committed.
    public func abort(_ reason: String) async {
        channel.finish(throwing: IngestAborted(reason: reason))
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
