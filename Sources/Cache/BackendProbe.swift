import Glance
import Logging
import Metrics

/// Asks every cloud's Glance for its version document at a steady pace and records
/// `depot_backend_up{cloud}` (1 reachable, 0 not), so an outage shows in monitoring even when
/// no client asks for an uncached image.
public struct BackendProbe: Sendable {
    public let clouds: [String: GlanceClient]
    /// Seconds between two rounds.
    public let interval: Duration
    let logger: Logger

    public init(clouds: [String: GlanceClient], interval: Duration = .seconds(15), logger: Logger = Logger(label: "depot.probe")) {
        self.clouds = clouds
        self.interval = interval
        self.logger = logger
    }

    /// Probes every cloud once, all at once; returns each cloud's answer.
    @discardableResult
    public func probeOnce() async -> [String: Bool] {
        await withTaskGroup(of: (String, Bool).self) { group in
            for (name, client) in clouds {
                group.addTask { (name, await client.answersVersionDocument()) }
            }
            var results: [String: Bool] = [:]
            for await (name, up) in group {
                Gauge(label: "depot_backend_up", dimensions: [("cloud", name)]).record(up ? 1 : 0)
                results[name] = up
            }
            return results
        }
    }

    /// Probes until cancelled.
    public func run() async {
        var last: [String: Bool] = [:]
        while !Task.isCancelled {
            let now = await probeOnce()
            for (name, up) in now where last[name] != up {
                if up { logger.info("backend answers", metadata: ["cloud": "\(name)"]) } else {
                    logger.warning("backend does not answer its version document", metadata: ["cloud": "\(name)"])
                }
            }
            last = now
            try? await Task.sleep(for: interval)
        }
    }
}
