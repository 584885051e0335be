import BlobStore
import Foundation
import Synchronization

/// One backend download into the blob store, shared by every client that asks for the image
/// while it runs (single flight).
///
/// Clients read the bytes as they land, from the temporary file, up to the written mark; none
/// of them waits for the whole image, and none opens a second backend download. The fill goes
/// on when its first client leaves.
public final class Fill: Sendable {
    public enum Outcome: Sendable, Equatable {
        case committed(CommittedBlob)
        case failed(String)
    }

    public let cloud: String
    public let imageID: String
    /// The image's size from Glance; the fill fails if the bytes disagree.
    public let expectedSize: UInt64
    /// Where the bytes are until commit.
    public let temporaryPath: String
    /// The temporary file, opened when the fill starts: it stays the same file (inode) when
    /// commit links it into place and unlinks the temporary name, so readers never race that.
    private let descriptor: Int32

    private struct State {
        var written: UInt64 = 0
        var outcome: Outcome?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    init(cloud: String, imageID: String, expectedSize: UInt64, temporaryPath: String) throws(CacheError) {
        self.cloud = cloud
        self.imageID = imageID
        self.expectedSize = expectedSize
        self.temporaryPath = temporaryPath
        descriptor = open(temporaryPath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw .fillFailed(imageID: imageID, reason: "cannot open \(temporaryPath): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    /// Bytes written so far.
    public var written: UInt64 { state.withLock { $0.written } }
    public var outcome: Outcome? { state.withLock { $0.outcome } }

    func advance(to written: UInt64) {
        update { $0.written = written }
    }

    func finish(_ outcome: Outcome) {
        update { $0.outcome = outcome }
    }

    /// Changes the state and wakes every reader waiting for a change.
    private func update(_ change: (inout State) -> Void) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            change(&state)
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Waits until bytes beyond `offset` are written or the fill ended.
    ///
    /// - Returns: the written mark (greater than `offset`), or the outcome once no more bytes
    ///   will come.
    public func waitForBytes(beyond offset: UInt64) async -> (written: UInt64, outcome: Outcome?) {
        while true {
            let snapshot: (UInt64, Outcome?)? = state.withLock { state in
                if state.written > offset || state.outcome != nil { return (state.written, state.outcome) }
                return nil
            }
            if let snapshot { return snapshot }
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if state.written > offset || state.outcome != nil { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Waits until the fill ended, committed or failed.
    public func ended() async -> Outcome {
        while true {
            if let outcome = await waitForBytes(beyond: .max).outcome { return outcome }
        }
    }

    /// A descriptor of the bytes for one reader (close it when done): the same file before and
    /// after commit.
    public func openForReading() throws(CacheError) -> Int32 {
        let fd = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { throw .fillFailed(imageID: imageID, reason: "dup: \(String(cString: strerror(errno)))") }
        return fd
    }
}
