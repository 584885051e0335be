import Catalog
import Foundation
import Metrics

/// Gauges that describe the cache's state rather than events: the budget, the push backlog.
///
/// They are recorded when `/metrics` is scraped (`recordGauges`), so a scrape sees the state
/// of that moment, including the age of a push that has been waiting since long before.
extension ImageCache {
    /// Records the budget and push-queue gauges; call just before rendering `/metrics`.
    ///
    /// - `depot_cache_budget_bytes`: `cache.size` (0 without a budget).
    /// - `depot_cache_used_bytes`, `depot_cache_reserved_bytes`: committed blobs, and room
    ///   reserved by running fills and uploads.
    /// - `depot_cache_pinned_bytes`, `depot_cache_push_held_bytes`: what eviction may not
    ///   take (pinned; waiting for a push).
    /// - `depot_push_backlog{state="pending"|"staged"}`: pushes not yet done.
    /// - `depot_push_oldest_pending_age_seconds`: how long the oldest pending push has waited
    ///   since its upload was acknowledged (0 when none waits).
    public func recordGauges(now: Date = Date()) {
        let usage = budget.usage
        let kept = budget.keptBytes
        Gauge(label: "depot_cache_budget_bytes").record(Double(budget.watermarks?.budget ?? 0))
        Gauge(label: "depot_cache_used_bytes").record(Double(usage.used))
        Gauge(label: "depot_cache_reserved_bytes").record(Double(usage.reserved))
        Gauge(label: "depot_cache_pinned_bytes").record(Double(kept.pinned))
        Gauge(label: "depot_cache_push_held_bytes").record(Double(kept.pushHeld))
        guard let waiting = try? catalog.pushes(in: [.pending, .staged]) else { return }
        let pending = waiting.filter { $0.state == .pending }
        Gauge(label: "depot_push_backlog", dimensions: [("state", "pending")]).record(Double(pending.count))
        Gauge(label: "depot_push_backlog", dimensions: [("state", "staged")]).record(Double(waiting.count - pending.count))
        let oldest = pending.map(\.createdAt).min()
        Gauge(label: "depot_push_oldest_pending_age_seconds").record(oldest.map { max(0, now.timeIntervalSince1970 - $0) } ?? 0)
    }

    /// Creates the event counters at zero, with each label value an alert or a panel asks for.
    ///
    /// Prometheus's `increase()` cannot see the first event of a series that appears with it
    /// (it starts at 1, with nothing before to compare), so a first failed push would never
    /// alert. Call once at start, after bootstrapping the metrics factory.
    public func registerCounters() {
        for outcome in ["done", "failed", "retry"] { _ = Counter(label: "depot_push_attempts_total", dimensions: [("outcome", outcome)]) }
        for outcome in ["committed", "failed"] { _ = Counter(label: "depot_fills_total", dimensions: [("outcome", outcome)]) }
        _ = Counter(label: "depot_backend_errors_total", dimensions: [("operation", "fill")])
        _ = Counter(label: "depot_evictions_total")
        _ = Counter(label: "depot_evicted_bytes_total")
        _ = Counter(label: "depot_push_failures_after_ack_total")
    }
}
