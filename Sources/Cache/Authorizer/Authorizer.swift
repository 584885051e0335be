import BlobStore
import Glance
import Logging
import Synchronization

/// What Depot owes Glance for images whose upload it acknowledged before Glance had the bytes;
/// the authorizer asks it per call (the push room answers), so it holds no reference back.
protocol AcknowledgedUploads: Sendable {
    func owesAcknowledgedBytes(cloud: String, image: GlanceImage) -> Bool
    func asAcknowledged(_ image: GlanceImage, cloud: String) async -> GlanceImage
    func mayPredateLanding(_ image: GlanceImage, cloud: String, askedAt: ContinuousClock.Instant) -> Bool
}

/// A value derived from one decision's image record alone, kept with the decision: what a hit
/// makes of the record (the HTTP representation: its size, entity tag, `Content-MD5`) is made
/// once per decision, not once per hit. A decision made again, by a refresh or another
/// request, starts an empty memo, so a kept value never outlives the record it came from.
public final class DecisionMemo: Sendable {
    private let kept = Mutex<(any AnyObject & Sendable)?>(nil)

    init() {}

    /// The value kept, or `make()`'s, kept for the next hit. `make` runs outside the lock and
    /// may run more than once when hits race; the first value kept stays.
    public func value<Value: AnyObject & Sendable>(_ make: () -> Value) -> Value {
        if let value = kept.withLock({ $0 }) as? Value { return value }
        let made = make()
        return kept.withLock { kept in
            if let value = kept as? Value { return value }
            kept = made
            return made
        }
    }
}

/// Who may read an image: Glance asked with the caller's own token, its positive answers
/// reused per token for a while, and for longer while Glance cannot be reached.
final class Authorizer: Sendable {
    private let clouds: [String: GlanceClient]
    private let decisionTTL: Duration
    /// What decisions' ages are measured on.
    private let clock: DecisionClock
    private let offlineGrace: Duration
    private let logger: Logger

    /// Immutable: `derived` is only true of this `image`, so a changed record is a new decision.
    private struct Decision {
        let image: GlanceImage
        let decidedAt: ContinuousClock.Instant
        /// When it is due for a refresh, counted as `Decided.standsUntil` is: worked out once,
        /// not per hit.
        let refreshDue: Duration
        /// What hits derive from `image`, made once for this decision.
        let derived = DecisionMemo()
    }

    /// A decision made `now` about `image`.
    private func decision(_ image: GlanceImage, at now: ContinuousClock.Instant) -> Decision {
        Decision(image: image, decidedAt: now, refreshDue: (now - started) + refreshAge)
    }

    /// Per token (hashed) and image.
    private struct DecisionKey: Hashable {
        var token: SecretFingerprint
        var image: ImageKey
    }

    private let decisions = Mutex<[DecisionKey: Decision]>([:])
    /// Advanced after every change to `decisions`, for answers kept past one hit.
    private let generation: KnownHitGeneration
    /// When this authorizer was made, on `clock`: what `Decided.standsUntil` counts from.
    private let started: ContinuousClock.Instant
    /// Decisions being asked of Glance now, shared by every request that needs one of them.
    private let deciding = Mutex<[DecisionKey: Task<Result<AuthorizedImage, CacheError>, Never>]>([:])
    /// Decisions being asked for again ahead of their expiry, one request to Glance each.
    private let refreshing = Mutex<Set<DecisionKey>>([])
    /// Clouds whose Glance did not answer the last time it was asked.
    private let outage = Mutex<Set<String>>([])

    init(clouds: [String: GlanceClient], settings: CacheSettings, generation: KnownHitGeneration, logger: Logger) {
        self.clouds = clouds
        self.generation = generation
        started = settings.decisionClock.now()
        decisionTTL = settings.decisionTTL
        clock = settings.decisionClock
        offlineGrace = settings.offlineGrace
        refreshAge = settings.decisionTTL * 3 / 4
        self.logger = logger
    }

    /// The age past which a decision that is used is asked for again in the background:
    /// three quarters of `decisionTTL`. Kept, not computed per hit: `Duration`'s `*` and `/`
    /// go through 128-bit integers (about 1,100 instructions per hit).
    let refreshAge: Duration

    /// The image record of a still-valid positive decision for this token, without I/O.
    ///
    /// - Returns: the record, and whether the caller must refresh the decision now
    ///   (`refresh(token:cloud:imageID:uploads:)`): it is older than `refreshAge` and no
    ///   refresh of it runs. So the readers of a hot image never all wait on Glance at once
    ///   when its decision expires; they keep the decision, which Glance confirms meanwhile.
    func decidedImage(token: String, _ image: ImageKey) -> (image: GlanceImage, derived: DecisionMemo, refresh: Bool)? {
        decided(fingerprint: SecretFingerprint(token), image).map { ($0.image, $0.derived, $0.refresh) }
    }

    /// What `decided(fingerprint:_:)` finds.
    struct Decided {
        let image: GlanceImage
        let derived: DecisionMemo
        /// Whether the caller must refresh the decision now (see `decidedImage(token:_:)`).
        let refresh: Bool
        /// When the decision is due for a refresh, on this authorizer's clock (`sinceStart`);
        /// nil when it is due already. A `Duration`, not a `ContinuousClock.Instant`, whose
        /// layout is the standard library's to change: every copy of an aggregate holding one
        /// went through its value witnesses (about 400 instructions per hit).
        let standsUntil: Duration?
    }

    /// `decidedImage(token:_:)` for a caller that kept the token's fingerprint (a connection
    /// whose requests repeat one token: hashing it was about 3,500 instructions per hit), and
    /// until when the answer stands as it is.
    func decided(fingerprint: SecretFingerprint, _ image: ImageKey) -> Decided? {
        let key = DecisionKey(token: fingerprint, image: image)
        guard let decision = decisions.withLock({ $0[key] }) else { return nil }
        let age = clock.now() - decision.decidedAt
        guard age < decisionTTL else { return nil }
        guard age >= refreshAge else {
            return Decided(image: decision.image, derived: decision.derived, refresh: false, standsUntil: decision.refreshDue)
        }
        return Decided(image: decision.image, derived: decision.derived, refresh: refreshing.withLock { $0.insert(key).inserted }, standsUntil: nil)
    }

    /// The decision clock's time since this authorizer was made.
    var sinceStart: Duration { clock.now() - started }

    /// Changes the decision for `key` (nil drops it), then advances the generation.
    private func setDecision(_ key: DecisionKey, _ decision: Decision?) {
        decisions.withLock { $0[key] = decision }
        generation.advance()
    }

    /// Asks Glance again, with the caller's token, for a decision `decidedImage` said to
    /// refresh. The old decision serves until its expiry meanwhile; Glance's refusal, or a
    /// record that is no longer active, drops it as the full path would.
    ///
    /// - Throws: as `authorize`.
    func refresh(token: String, cloud: String, imageID: String, uploads: some AcknowledgedUploads) async throws(CacheError) {
        defer { abandonRefresh(token: token, ImageKey(cloud: cloud, imageID: imageID)) }
        _ = try await authorize(token: token, cloud: cloud, imageID: imageID, uploads: uploads, reusingDecision: false)
    }

    /// Lets go of a refresh `decidedImage` handed out, once it ran or when it will not.
    func abandonRefresh(token: String, _ image: ImageKey) {
        let key = decisionKey(token: token, cloud: image.cloud, imageID: image.imageID)
        _ = refreshing.withLock { $0.remove(key) }
    }

    /// Drops every token's decision about an image (deleted or deactivated upstream).
    func forget(_ image: ImageKey) {
        decisions.withLock { table in table = table.filter { $0.key.image != image } }
        generation.advance()
    }

    /// Asks the backend, with the caller's own token, whether the caller may read the image.
    ///
    /// Positive decisions are reused for `decisionTTL` per (token, cloud, image), never across
    /// tokens. When the backend is unreachable, a decision younger than `offlineGrace` is used.
    ///
    /// Requests that need a decision for the same token and image at the same moment share one
    /// round trip to Glance (the readers of an image whose decision expired, a segmented
    /// download's connections).
    ///
    /// - Parameters:
    ///   - uploads: what Depot owes Glance, for an image whose upload it acknowledged before
    ///     Glance had the bytes (served from here meanwhile).
    ///   - reusingDecision: false to ask Glance even while a decision is valid (a refresh).
    /// - Throws: `.imageNotActive` after dropping the image's decisions; the owner forgets
    ///   the rest of what it knows of the image.
    func authorize(
        token: String?, cloud: String, imageID: String, uploads: some AcknowledgedUploads, reusingDecision: Bool = true
    ) async throws(CacheError) -> AuthorizedImage {
        guard let client = clouds[cloud] else { throw .unknownCloud(cloud) }
        guard let token, !token.isEmpty else {
            // Glance refuses a request without identity; Depot's own credentials never stand in.
            throw .backendRefused(status: 401, message: "This server could not verify that you are authorized to access the document you requested. Send an X-Auth-Token.")
        }
        let key = decisionKey(token: token, cloud: cloud, imageID: imageID)
        let now = clock.now()
        let cached = decisions.withLock { $0[key] }
        if reusingDecision, let cached, now - cached.decidedAt < decisionTTL {
            return AuthorizedImage(cloud: cloud, image: cached.image, fromOfflineGrace: false)
        }
        // One request to Glance per token and image, however many ask at once.
        // A refresh that finds a request asking already takes that answer: it is as fresh.
        let decision = deciding.withLock { table -> Task<Result<AuthorizedImage, CacheError>, Never> in
            if let running = table[key] { return running }
            let task = Task { [self] () -> Result<AuthorizedImage, CacheError> in
                defer { _ = deciding.withLock { $0.removeValue(forKey: key) } }
                do throws(CacheError) {
                    return .success(try await decide(client: client, token: token, key: key, cached: cached, now: now, uploads: uploads))
                } catch {
                    return .failure(error)
                }
            }
            table[key] = task
            return task
        }
        return try await decision.value.get()
    }

    /// Asks Glance for a decision (see `authorize`) and records it.
    private func decide(
        client: GlanceClient, token: String, key: DecisionKey, cached: Decision?, now: ContinuousClock.Instant, uploads: some AcknowledgedUploads
    ) async throws(CacheError) -> AuthorizedImage {
        let cloud = key.image.cloud, imageID = key.image.imageID
        // When Glance was asked, on the clock `Landings` keeps (the decision clock may be a test's).
        var askedAt = ContinuousClock.now
        // Seeing an image's record is not downloading it (a reader-only token may do the first
        // and not the second): Glance's own download check runs alongside, on one byte.
        async let downloadRefusal = Self.downloadRefusal(client, imageID: imageID, token: token)
        var image: GlanceImage
        do {
            image = try await client.showImage(imageID, auth: .token(token))
        } catch {
            if let cached, now - cached.decidedAt < offlineGrace, error.status == nil || error.isTransient {
                noteOutage(cloud: cloud, error: error)
                return AuthorizedImage(cloud: cloud, image: cached.image, fromOfflineGrace: true)
            }
            throw refusal(error, cloud: cloud, key: key)
        }
        noteRecovery(cloud: cloud)
        if let refusal = await downloadRefusal, let status = refusal.status {
            setDecision(key, nil)
            throw .backendRefused(status: status, message: GlanceError.message(of: refusal))
        }
        var rereads = 0
        while !image.isActive {
            if uploads.owesAcknowledgedBytes(cloud: cloud, image: image), case let pending = await uploads.asAcknowledged(image, cloud: cloud),
               pending.isActive {
                // Depot holds the bytes and owes them to Glance: serve them meanwhile.
                setDecision(key, decision(pending, at: now))
                return AuthorizedImage(cloud: cloud, image: pending, fromOfflineGrace: false)
            }
            // The record may be stale: read while the download check ran (an upload's push may
            // have ended since, leaving "saving"), or before a push of Depot's landed, whose
            // blob, and with it Depot's memory of owing the bytes, may be gone since (then
            // "queued" would answer "no data" for bytes Depot acknowledged).
            let stale = (rereads == 0 && Self.inTransition(image)) || uploads.mayPredateLanding(image, cloud: cloud, askedAt: askedAt)
            guard stale, rereads < Landings.maximumRereads else { break }
            rereads += 1
            askedAt = ContinuousClock.now
            do {
                image = try await client.showImage(imageID, auth: .token(token))
            } catch {
                throw refusal(error, cloud: cloud, key: key)
            }
        }
        guard image.isActive else {
            setDecision(key, nil)
            throw .imageNotActive(imageID: imageID, status: image.status ?? "unknown")
        }
        setDecision(key, decision(image, at: now))
        return AuthorizedImage(cloud: cloud, image: image, fromOfflineGrace: false)
    }

    /// The error for a record Glance would not give: its refusal, or its absence.
    private func refusal(_ error: GlanceError, cloud: String, key: DecisionKey) -> CacheError {
        if let status = error.status, !error.isTransient {
            // A 404 says the image is gone *or* hidden from this token, so the mapping stays:
            // image ids are never reused, and other tokens may still read it.
            setDecision(key, nil)
            return .backendRefused(status: status, message: GlanceError.message(of: error))
        }
        noteOutage(cloud: cloud, error: error)
        return .backendUnavailable(cloud: cloud, reason: "\(error)")
    }

    /// Whether the image is on its way to active (its data is being written).
    static func inTransition(_ image: GlanceImage) -> Bool {
        ["saving", "uploading", "importing"].contains(image.status ?? "")
    }

    /// Glance's refusal (401/403) to let this token download the image, asked with a one-byte
    /// range; nil when it allows it or answers anything else (the record decides then).
    static func downloadRefusal(_ client: GlanceClient, imageID: String, token: String) async -> GlanceError? {
        do {
            // No retries: Glance 33 answers 500 to a range of an image without data, and only
            // 401/403 matter here.
            _ = try await client.download(imageID: imageID, range: 0...0, auth: .token(token), retries: false) { _ in }
            return nil
        } catch {
            return error.status == 403 || error.status == 401 ? error : nil
        }
    }

    private func decisionKey(token: String, cloud: String, imageID: String) -> DecisionKey {
        // Hash the token: the table must not become a list of live credentials.
        DecisionKey(token: SecretFingerprint(token), image: ImageKey(cloud: cloud, imageID: imageID))
    }

    private func noteOutage(cloud: String, error: GlanceError) {
        if outage.withLock({ $0.insert(cloud).inserted }) {
            logger.error("image service unreachable; serving cached images within the offline grace", metadata: ["cloud": "\(cloud)", "error": "\(error)"])
        }
    }

    private func noteRecovery(cloud: String) {
        if outage.withLock({ $0.remove(cloud) != nil }) {
            logger.notice("image service reachable again", metadata: ["cloud": "\(cloud)"])
        }
    }
}
