import BlobStore
import DepotTestSupport
import Foundation
import Testing

/// The Grafana dashboard and the Prometheus rules query metrics that a running Depot exports.
@Suite(.serialized) struct MonitoringConfigTests {
    static let dashboardPath = repositoryRoot + "/config/grafana/depot.json"
    static let rulesPath = repositoryRoot + "/config/prometheus/depot-rules.yml"

    /// Every PromQL expression of the dashboard's panels.
    static func dashboardExpressions() throws -> [String] {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dashboardPath))) as? [String: Any])
        let panels = try #require(document["panels"] as? [[String: Any]])
        return panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
    }

    /// Every `expr:` of the rules file, single-line or a folded block (`>-`).
    static func ruleExpressions() throws -> [String] {
        let lines = try String(contentsOfFile: rulesPath, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        var expressions: [String] = []
        var index = 0
        while index < lines.count {
            let line = lines[index]
            index += 1
            guard let range = line.range(of: "expr:") else { continue }
            let value = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
            guard value == ">-" || value == ">" || value == "|" else {
                expressions.append(value)
                continue
            }
            let indent = line.prefix { $0 == " " }.count
            var block: [String] = []
            while index < lines.count, lines[index].prefix(while: { $0 == " " }).count > indent || lines[index].isEmpty {
                block.append(lines[index].trimmingCharacters(in: .whitespaces))
                index += 1
            }
            expressions.append(block.joined(separator: " "))
        }
        return expressions
    }

    static let promQLWords: Set<String> = [
        "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "time", "vector", "clamp_min", "clamp_max",
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "abs", "topk", "bottomk",
    ]

    /// The metric names an expression selects: identifiers outside label matchers, ranges,
    /// strings and grouping clauses, that are not PromQL's own words.
    static func metricNames(in expression: String) -> Set<String> {
        var text = expression
        for pattern in [#""(\\.|[^"\\])*""#, #"\{[^}]*\}"#, #"\[[^\]]*\]"#, #"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"#] {
            text = text.replacingOccurrences(of: pattern, with: " ", options: .regularExpression)
        }
        var names: Set<String> = []
        let regex = try! NSRegularExpression(pattern: #"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*"#)
        for match in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            let name = String(text[Range(match.range, in: text)!])
            let after = text[Range(match.range, in: text)!.upperBound...].drop { $0 == " " }
            if promQLWords.contains(name) || after.hasPrefix("(") || name.lowercased() == "e" { continue }
            names.insert(name)
        }
        return names
    }

    @Test func theNameParserFindsMetricsAndSkipsPromQLsOwnWords() {
        let names = Self.metricNames(
            in: #"histogram_quantile(0.99, sum by (le, route) (rate(depot_x_bucket{instance=~"$instance",status=~"5.."}[$__rate_interval]))) / (depot_y > 0) + 1e9"#)
        #expect(names == ["depot_x_bucket", "depot_y"])
    }

    /// A real Depot after a miss, a hit, an upload and its push, and an eviction: every name
    /// the dashboard and the rules query is in its /metrics.
    @Test func everyMetricTheDashboardAndTheRulesQueryIsExported() async throws {
        let glance = try await GlanceServer.shared()
        let data = TemporaryDirectory("depot-metrics")
        let depot = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
            "--admin-token", DepotHarness.adminToken, "--cache-size", "256MiB",
        ])
        defer { depot.stopBlocking() }
        let bytes = pseudoRandomBytes(count: 2 << 20, seed: 151)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        #expect(try await curl("\(depot.url)/v2/images/\(image.id)/file").header("x-depot-cache") == "miss")
        #expect(try await curl("\(depot.url)/v2/images/\(image.id)/file").header("x-depot-cache") == "hit")

        let created = try await curl("\(depot.url)/v2/images", [
            "-X", "POST", "-H", "Content-Type: application/json",
            "-d", #"{"name": "metrics-upload", "disk_format": "raw", "container_format": "bare"}"#,
        ])
        let uploadID = try #require((try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: Any])?["id"] as? String)
        let file = data.path + "/upload.raw"
        try Data(pseudoRandomBytes(count: 1 << 20, seed: 152)).write(to: URL(fileURLWithPath: file))
        let upload = try await curl("\(depot.url)/v2/images/\(uploadID)/file", ["-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", file])
        #expect(upload.status == 204)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let pushes = try await curl("\(depot.url)/depot/v1/pushes", token: DepotHarness.adminToken)
            if String(decoding: pushes.body, as: UTF8.self).contains(#""done""#) { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let evict = try await curl(
            "\(depot.url)/depot/v1/blobs/\(Digest.of(bytes, algorithm: .sha256).hex)", token: DepotHarness.adminToken, ["-X", "DELETE"])
        #expect(evict.status == 200, "\(String(decoding: evict.body, as: UTF8.self))")

        let scrape = String(decoding: try await curl("\(depot.url)/metrics", token: nil).body, as: UTF8.self)
        let exported = Set(scrape.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { String($0.prefix { $0 != "{" && $0 != " " }) })
        #expect(exported.contains("depot_evictions_total") && scrape.contains("depot_evictions_total 1"), "the eviction was counted")

        let dashboard = try Self.dashboardExpressions(), rules = try Self.ruleExpressions()
        #expect(dashboard.count >= 15 && rules.count >= 7, "\(dashboard.count) dashboard queries, \(rules.count) rules")
        for expression in dashboard + rules {
            let names = Self.metricNames(in: expression)
            #expect(!names.isEmpty, "no metric in \(expression)")
            for name in names where !exported.contains(name) {
                Issue.record("\(name) (in \(expression)) is not in Depot's /metrics")
            }
        }
    }
}
