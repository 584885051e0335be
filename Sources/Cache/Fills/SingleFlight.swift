/// One fill per image, however many requests ask for it at once: the decisions, without I/O.
///
/// A request claims the image first; only the request that claimed it reserves budget room and
/// opens a writer, and requests that arrive meanwhile wait for that and join the fill (or hear
/// why it could not start). So a request for an image already being filled always joins that
/// fill, whatever the budget says, and a fill's reservation (which may evict) is made once.
///
/// `Flight` is the running fill, `Waiter` what the owner resumes when a claimed image's fill
/// starts or is abandoned (a continuation). The owner keeps the machine behind one lock and
/// resumes waiters outside it.
package struct SingleFlight<Flight, Waiter> {
    private enum Entry {
        /// Claimed by a request that is reserving room and opening the writer.
        case claimed(waiters: [Waiter])
        case running(Flight)
    }

    /// Fills claimed or running at once; one more is refused.
    package let limit: Int
    private var entries: [ImageKey: Entry] = [:]

    package init(limit: Int) { self.limit = limit }

    package enum ClaimAction {
        /// The caller claimed the image: it reserves room and opens the writer, then reports
        /// `started` or `abandoned`.
        case lead
        /// A fill of the image is running: read from it.
        case join(Flight)
        /// Another request claimed the image a moment ago: the waiter is resumed when its fill
        /// starts or is abandoned.
        case wait
        /// `limit` fills are claimed or running.
        case refuse(running: Int)
    }

    /// A request wants the image's fill.
    package mutating func claim(_ key: ImageKey, waiter: Waiter) -> ClaimAction {
        switch entries[key] {
        case let .running(flight)?:
            return .join(flight)
        case var .claimed(waiters)?:
            waiters.append(waiter)
            entries[key] = .claimed(waiters: waiters)
            return .wait
        case nil:
            guard entries.count < limit else { return .refuse(running: entries.count) }
            entries[key] = .claimed(waiters: [])
            return .lead
        }
    }

    /// The claimer's fill started: it runs under the key until `ended`.
    ///
    /// - Returns: the requests that waited for it; resume them with the fill.
    package mutating func started(_ key: ImageKey, _ flight: Flight) -> [Waiter] {
        guard case let .claimed(waiters)? = entries[key] else { preconditionFailure("\(key) started without being claimed") }
        entries[key] = .running(flight)
        return waiters
    }

    /// The claimer could not start the fill (no room, no disk, no writer).
    ///
    /// - Returns: the requests that waited for it; resume them with the claimer's error.
    package mutating func abandoned(_ key: ImageKey) -> [Waiter] {
        guard case let .claimed(waiters)? = entries.removeValue(forKey: key) else { preconditionFailure("\(key) abandoned without being claimed") }
        return waiters
    }

    /// The fill ended (committed or failed): the next request for the image claims it anew.
    package mutating func ended(_ key: ImageKey) {
        if case .running? = entries[key] { entries[key] = nil }
    }

    /// The running fill of an image.
    package func flight(_ key: ImageKey) -> Flight? {
        if case let .running(flight)? = entries[key] { return flight }
        return nil
    }

    /// Images whose fill is running.
    package var running: [ImageKey] {
        entries.compactMap { key, entry in
            if case .running = entry { return key }
            return nil
        }
    }
}
