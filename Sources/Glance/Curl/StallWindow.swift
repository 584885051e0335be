/// Stall detection for one transfer: fewer than `minimumSpeed` bytes/s over a window of
/// `limit`, not counting time the transfer was paused because Depot's side was not ready (a
/// consumer that does not read, a producer that has nothing yet). Such a wait is not the
/// backend's stall, and a paused transfer moves nothing by design.
struct StallWindow {
    let limit: Duration
    let minimumSpeed: Int
    private var start: ContinuousClock.Instant
    private var bytes = 0
    private var paused: Duration = .zero
    private var pausedSince: ContinuousClock.Instant?

    init(limit: Duration, minimumSpeed: Int, now: ContinuousClock.Instant) {
        self.limit = limit
        self.minimumSpeed = minimumSpeed
        start = now
    }

    mutating func moved(_ count: Int) { bytes += count }

    mutating func pause(at now: ContinuousClock.Instant) {
        if pausedSince == nil { pausedSince = now }
    }

    mutating func resume(at now: ContinuousClock.Instant) {
        guard let since = pausedSince else { return }
        paused += now - since
        pausedSince = nil
    }

    /// The seconds of a window that moved too little, once one has; nil while the transfer keeps
    /// up (each full window that kept up starts the next).
    mutating func check(at now: ContinuousClock.Instant) -> Double? {
        let pausedNow = pausedSince.map { now - $0 } ?? .zero
        let active = now - start - paused - pausedNow
        guard active >= limit else { return nil }
        let seconds = Double(active.components.seconds) + Double(active.components.attoseconds) / 1e18
        if Double(bytes) < Double(minimumSpeed) * seconds { return seconds }
        start = now
        bytes = 0
        paused = .zero
        if pausedSince != nil { pausedSince = now }
        return nil
    }
}
