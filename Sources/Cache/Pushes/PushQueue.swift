import BlobStore
import Catalog
import Foundation
import Glance
import Logging
import Metrics
import Retry
import Synchronization

/// How pushes to the backends run.
public struct PushSettings: Sendable {
    /// Pushes running at once, over all clouds.
    public var concurrency = 2
    /// The wait before the second attempt; doubled per attempt, with jitter.
    public var initialBackoff: Duration = .seconds(2)
    /// The longest wait between attempts.
    public var maximumBackoff: Duration = .seconds(300)
    /// How long a request that needs Glance to hold an image's acknowledged bytes (an action,
    /// a PATCH, a location call) waits for their push, run ahead of the queue; 503 with
    /// `Retry-After` beyond.
    public var landingWait: Duration = .seconds(60)
    /// How long one attempt waits for a glance-direct import to become active.
    public var importWait: Duration = .seconds(120)
    /// An image left `saving` (or `importing`) this long without an update will not recover
    /// by itself (Glance leaves it so after some internal errors): the push stops.
    public var stuckAfter: Duration = .seconds(600)

    public init() {}
}

/// The durable queue of bytes Depot owes to backends: uploads acknowledged before Glance had
/// them, and staged data waiting for (or past) its import call.
///
/// Every push is a row in the Catalog, so a restart resumes where the last run stopped. Pushes
/// run with Depot's service credentials, a bounded number at a time; transient failures are
/// retried with exponential backoff and jitter, permanent ones (image deleted, data already
/// there, too large…) stop the push and keep the reason. A push is done only when Glance
/// reports the blob's size and SHA-512.
public final class PushQueue: Sendable {
    let catalog: Catalog
    let store: BlobStore
    /// Where the Catalog's writes run.
    let disk: DiskPools
    let clouds: [String: GlanceClient]
    public let settings: PushSettings
    let logger: Logger
    /// Completes a blob's SHA-512 and MD5, which prove a push, if an upload deferred them.
    let digests: DigestPasses
    /// Told when a push stops being pending (done or failed).
    let settlement: PushSettlement
    private let running = Mutex<Set<ImageKey>>([])
    private let failuresAfterAcknowledgement = Atomic<Int>(0)
    /// Running pushes whose image was deleted meanwhile: their outcome is not recorded.
    private let cancelled = Mutex<Set<ImageKey>>([])
    private let wakeup = Wakeup()

    init(
        catalog: Catalog, store: BlobStore, disk: DiskPools, clouds: [String: GlanceClient], settings: PushSettings, digests: DigestPasses,
        settlement: PushSettlement, logger: Logger
    ) {
        self.catalog = catalog
        self.disk = disk
        self.digests = digests
        self.settlement = settlement
        self.store = store
        self.clouds = clouds
        self.settings = settings
        self.logger = logger
    }

    static func key(_ cloud: String, _ imageID: String) -> ImageKey { ImageKey(cloud: cloud, imageID: imageID) }

    /// Counts a push that failed for good after its upload was acknowledged (write-back): the
    /// image goes back to what Glance says, and the operator must act.
    func countFailureAfterAcknowledgement() {
        failuresAfterAcknowledgement.add(1, ordering: .relaxed)
        Counter(label: "depot_push_failures_after_ack_total").increment()
    }

    /// Pushes that failed for good after their upload was acknowledged, since start.
    public var failureAfterAcknowledgementCount: Int { failuresAfterAcknowledgement.load(ordering: .relaxed) }

    /// Forgets a push whose image was deleted: nothing is owed any more. A transfer running
    /// now ends without recording its outcome.
    func cancel(_ push: PushRecord) async {
        let key = Self.key(push.cloud, push.imageID)
        running.withLock { running in
            if running.contains(key) { cancelled.withLock { _ = $0.insert(key) } }
        }
        let catalog = catalog
        // Syncs the WAL and may wait seconds for the lock: on the disk pool.
        do { try await disk.run { () throws in try catalog.removePush(cloud: push.cloud, imageID: push.imageID) } } catch {
            logger.error("cannot forget a cancelled push", metadata: ["cloud": "\(push.cloud)", "image": "\(push.imageID)", "error": "\(error)"])
        }
    }

    /// Puts staged bytes into Glance's staging area (as the client's `PUT …/stage` would have),
    /// so that a request needing Glance to hold them can go on; the push stays staged until
    /// the client's import. True when Glance holds them.
    func stageInBackend(_ push: PushRecord) async -> Bool {
        guard let client = clouds[push.cloud] else { return false }
        do {
            let image = try await client.showImage(push.imageID, auth: .service)
            if image.status == "uploading" { return true }
            try await client.stageImageData(push.imageID, from: .file(path: store.path(for: push.digest)), auth: .service)
            return true
        } catch {
            logger.warning("staging the acknowledged bytes in the backend failed", metadata: ["cloud": "\(push.cloud)", "image": "\(push.imageID)", "error": "\(error)"])
            return false
        }
    }

    /// Pushes currently transferring.
    public var inFlight: Int { running.withLock { $0.count } }

    /// Looks at the queue now instead of at the next timer.
    public func wake() { wakeup.signal() }

    /// Marks a push as taken by its caller (write-through), so the queue leaves it alone.
    func claim(cloud: String, imageID: String) -> Bool {
        running.withLock { $0.insert(Self.key(cloud, imageID)).inserted }
    }

    func unclaim(cloud: String, imageID: String) {
        _ = running.withLock { $0.remove(Self.key(cloud, imageID)) }
    }

    /// Runs due pushes until cancelled.
    public func run() async {
        logger.info("push queue started", metadata: ["concurrency": "\(settings.concurrency)"])
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let now = Date().timeIntervalSince1970
                var nextDue = now + 30
                do {
                    let pending = try catalog.pushes(in: [.pending])
                    for push in pending {
                        let key = Self.key(push.cloud, push.imageID)
                        guard push.nextAttempt <= now else {
                            nextDue = min(nextDue, push.nextAttempt)
                            continue
                        }
                        let started = running.withLock { running -> Bool in
                            guard running.count < settings.concurrency, !running.contains(key) else { return false }
                            running.insert(key)
                            return true
                        }
                        guard started else { continue }
                        // The list may predate an attempt that just ended: start only from
                        // the row as it is now.
                        guard let current = try? catalog.push(cloud: push.cloud, imageID: push.imageID), current.state == .pending,
                              current.nextAttempt <= now
                        else {
                            running.withLock { _ = $0.remove(key) }
                            continue
                        }
                        group.addTask {
                            _ = await self.attempt(current, auth: .service)
                            self.running.withLock { _ = $0.remove(key) }
                            self.wake()
                        }
                    }
                } catch {
                    logger.error("cannot read the push queue; retrying", metadata: ["error": "\(error)"])
                }
                await wakeup.wait(atMost: .seconds(max(0.05, min(nextDue - now, 30))))
            }
        }
    }

    /// One attempt at a push; saves and returns its new state.
    ///
    /// - Parameter auth: the service credentials, or the caller's token for a write-through
    ///   upload (so Glance itself decides whether the caller may upload).
    /// - Returns: the push's new state, and the backend's HTTP status when it refused.
    @discardableResult
    func attempt(_ original: PushRecord, auth: RequestAuth) async -> (push: PushRecord, status: Int?) {
        var push = original
        push.attempts += 1
        let started = ContinuousClock.now
        let metadata: Logger.Metadata = ["cloud": "\(push.cloud)", "image": "\(push.imageID)", "blob": "\(push.sha256)", "attempt": "\(push.attempts)"]
        let outcome = await transfer(push, auth: auth)
        let now = Date()
        push.end(attempt: outcome, at: now, backoff: backoff(afterAttempt: push.attempts))
        switch outcome {
        case .done:
            logger.info("push done", metadata: metadata.merging(["duration": "\(ContinuousClock.now - started)"]) { $1 })
        case let .permanent(reason, _):
            logger.error("push failed for good", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            // A write-back upload was acknowledged long ago; a write-through caller hears it now.
            if case .service = auth { countFailureAfterAcknowledgement() }
        case let .retry(reason, _, _):
            let wait = push.nextAttempt - now.timeIntervalSince1970
            logger.warning("push will be retried", metadata: metadata.merging(["reason": "\(reason)", "in": "\(String(format: "%.1f", wait)) s"]) { $1 })
        }
        if cancelled.withLock({ $0.remove(Self.key(push.cloud, push.imageID)) != nil }) {
            push.state = .failed
            push.lastError = "cancelled: the image was deleted"
            logger.info("push cancelled: the image was deleted", metadata: metadata)
            return (push, outcome.status)
        }
        // The push's row and what its settlement changes are Catalog writes, which sync the WAL
        // and may wait seconds for the lock: on the disk pool, not the cooperative pool.
        let ended = push
        await disk.run { [self] in
            do {
                try catalog.update(ended)
            } catch {
                logger.error("cannot record the push's state", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            }
            let label = ended.state == .done ? "done" : ended.state == .failed ? "failed" : "retry"
            Counter(label: "depot_push_attempts_total", dimensions: [("outcome", label)]).increment()
            Timer(label: "depot_push_duration_seconds", dimensions: [("outcome", label)]).record(duration: ContinuousClock.now - started)
            if ended.state != .pending { settlement.settled(ended) }
        }
        return (push, outcome.status)
    }

    /// Seconds to wait after `attempts` failed attempts: exponential, capped, with jitter so
    /// that many pushes failing together do not retry together.
    func backoff(afterAttempt attempts: Int) -> Double {
        Self.seconds(Backoff(initial: settings.initialBackoff, maximum: settings.maximumBackoff).delay(afterFailures: attempts))
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// One attempt's calls to Glance, as `PushStateMachine` asks for them.
    private func transfer(_ push: PushRecord, auth: RequestAuth) async -> PushOutcome {
        guard let client = clouds[push.cloud] else { return .permanent("cloud \(push.cloud) is no longer configured") }
        do {
            guard try catalog.blob(push.digest) != nil, store.contains(push.digest) else {
                return .permanent("blob \(push.sha256) is no longer in the store")
            }
        } catch {
            return .retry("catalog: \(error)", after: nil)
        }
        // The SHA-512 that proves the push is computed while the bytes travel.
        let digests = Task { [digests] () throws -> BlobRecord in try await digests.complete(push.digest) }
        defer { digests.cancel() }
        let path = store.path(for: push.digest)
        var machine = PushStateMachine<ContinuousClock>(method: push.method, importWait: settings.importWait, stuckAfter: settings.stuckAfter)
        var action = machine.start()
        while true {
            do {
                switch action {
                case let .end(outcome):
                    return outcome
                case let .read(credentials, delay):
                    if let delay { try? await Task.sleep(for: delay) }
                    let image = try await client.showImage(push.imageID, auth: credentials == .attempt ? auth : .service)
                    action = machine.read(image, now: .now, date: Date())
                case .upload:
                    try await client.uploadImageData(push.imageID, from: .file(path: path), auth: auth)
                    action = machine.transferred()
                case .stageAndImport:
                    try await client.stageImageData(push.imageID, from: .file(path: path), auth: auth)
                    try await client.importImage(push.imageID, method: "glance-direct", auth: auth)
                    action = machine.transferred()
                case .importStaged:
                    try await client.importImage(push.imageID, method: "glance-direct", auth: auth)
                    action = machine.transferred()
                case let .verify(image):
                    action = machine.verified(image, blob: try await digests.value)
                }
            } catch let error as GlanceError {
                action = machine.failed(error)
            } catch {
                return .retry("cannot read the blob's digests: \(error)", after: nil)
            }
        }
    }
}

/// Wakes one waiter early; a signal with no waiter is kept for the next wait.
final class Wakeup: Sendable {
    private struct State {
        var signalled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.signalled = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns at the next signal, after `atMost`, or when the task is cancelled.
    func wait(atMost timeout: Duration) async {
        let timer = Task { [self] in
            // A cancelled timer must not signal: that would end the next wait at once.
            do {
                try await Task.sleep(for: timeout)
                signal()
            } catch {}
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.signalled {
                        state.signalled = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            signal()
        }
    }
}
