import BlobStore
import DepotTestSupport
import Foundation
import Testing

/// What the operator reads: help with defaults, refusals that name the mistake, stats without
/// a blank header, progress on a terminal and in a log.
@Suite(.serialized) struct CLIMessagesTests {
    /// The environment without DEPOT_* variables, plus `extra`.
    static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("DEPOT_") }.merging(extra) { $1 }
    }

    /// `depot` in the environment without DEPOT_* variables (or `environment`).
    static func depotClean(_ arguments: [String], stdin: Data? = nil, environment: [String: String] = environment()) async throws -> Outcome {
        try await depot(arguments, stdin: stdin, environment: environment)
    }

    static let adminToken = "cli-messages-admin"

    @Test func serveHelpShowsTheDefaults() async throws {
        let help = try await depot(["serve", "--help"], environment: Self.environment())
        #expect(help.status == 0)
        // The defaults config/depot.example.yaml and the README document.
        for expected in [
            "Default: 127.0.0.1:9494", "Default: ./depot-data", "Default: write-back", "Default: info", "Default: default.", "Default: RegionOne.",
            "Default: no budget",
        ] {
            let text = help.text.replacingOccurrences(of: #"\s+"#, with: " ", options: .regularExpression)
            #expect(text.contains(expected), "no \(expected) in\n\(help.text)")
        }
    }

    @Test func aURLEndingInV2IsNamedAsTheMistake() async throws {
        let outcome = try await depot(["cache", "stats", "--url", "http://127.0.0.1:9/v2", "--admin-token", "x"], environment: Self.environment())
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("ends in /v2"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("--url http://127.0.0.1:9\n") || outcome.stderr.hasSuffix("--url http://127.0.0.1:9"), "\(outcome.stderr)")
    }

    @Test func refusalsTellAWrongTokenFromAMissingOneAndStatsExplainTheBudget() async throws {
        let glance = try await GlanceServer.shared()
        let data = TemporaryDirectory("depot-cli-messages")
        let server = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", "depot:service:admin,member,reader", "--admin-token", Self.adminToken,
        ])
        defer { server.stopBlocking() }

        let wrong = try await Self.depotClean(["cache", "stats", "--url", server.url, "--admin-token", "not-the-token"])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("the token was refused"), "\(wrong.stderr)")
        #expect(!wrong.stderr.contains("pass --admin-token"), "\(wrong.stderr)")
        let fromEnvironment = try await Self.depotClean(["cache", "ls", "--url", server.url], environment: Self.environment(["DEPOT_ADMIN_TOKEN": "stale"]))
        #expect(fromEnvironment.stderr.contains("the token was refused (from DEPOT_ADMIN_TOKEN)"), "\(fromEnvironment.stderr)")
        let missing = try await Self.depotClean(["cache", "stats", "--url", server.url])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("pass --admin-token"), "\(missing.stderr)")

        let stats = try await Self.depotClean(["cache", "stats", "--url", server.url, "--admin-token", Self.adminToken])
        #expect(stats.status == 0, "\(stats.stderr)")
        let lines = stats.text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first?.hasPrefix("budget") == true, "the first line is the budget, not a blank header:\n\(stats.text)")
        #expect(!lines.dropLast().contains { $0.trimmingCharacters(in: .whitespaces).isEmpty }, "a blank line in\n\(stats.text)")
        let budget = lines.first.map(String.init) ?? ""
        #expect(budget.contains("none (no cache.size"), "\(budget)")
        #expect(!budget.hasSuffix(" -"), "\(budget)")
    }

    /// Prefetch waits for its fills and shows progress: plain lines in a log.
    @Test func prefetchWaitsAndReportsProgressInPlainLines() async throws {
        let glance = try await GlanceServer.shared()
        let data = TemporaryDirectory("depot-cli-prefetch")
        let server = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", "depot:service:admin,member,reader", "--admin-token", Self.adminToken,
        ])
        defer { server.stopBlocking() }
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 171)
        let image = try await createActiveImage(glance.url, bytes)
        let prefetch = try await Self.depotClean(
            ["cache", "prefetch", image, "--url", server.url, "--admin-token", Self.adminToken], environment: Self.environment(["DEPOT_PROGRESS_INTERVAL": "0"]))
        #expect(prefetch.status == 0, "\(prefetch.stderr)")
        #expect(prefetch.text.contains("\(image)  cached  3.0 MiB"), "\(prefetch.text)")
        #expect(prefetch.stderr.contains("prefetch: done, 3.0 MiB"), "\(prefetch.stderr)")
        #expect(prefetch.stderr.contains("of 1 images"), "\(prefetch.stderr)")
        #expect(!prefetch.stderr.contains("\u{1B}") && !prefetch.stderr.contains("\r"), "control characters in a log")

        let missing = try await Self.depotClean(
            ["cache", "prefetch", UUID().uuidString, "--url", server.url, "--admin-token", Self.adminToken])
        #expect(missing.status != 0)
    }

    /// fsck and store put: a bar with rate and ETA on a terminal (a pty from script(1)),
    /// plain lines with the same figures otherwise.
    @Test func longCommandsShowABarOnATerminalAndPlainLinesOtherwise() async throws {
        let data = TemporaryDirectory("depot-cli-progress")
        let file = data.path + "-input"
        try Data(pseudoRandomBytes(count: 24 << 20, seed: 172)).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let quick = Self.environment(["DEPOT_PROGRESS_INTERVAL": "0"])

        let put = try await Self.depotClean(["store", "put", file, "--data-dir", data.path], environment: quick)
        #expect(put.status == 0, "\(put.stderr)")
        #expect(put.stderr.contains("store put: done, 24.0 MiB in"), "\(put.stderr)")
        #expect(put.stderr.contains("% ") || put.stderr.contains("%,"), "\(put.stderr)")
        #expect(put.stderr.contains("ETA"), "\(put.stderr)")
        #expect(!put.stderr.contains("\r"), "\(put.stderr)")

        let plainFsck = try await Self.depotClean(["fsck", "--data-dir", data.path], environment: quick)
        #expect(plainFsck.status == 0, "\(plainFsck.stderr)")
        #expect(plainFsck.stderr.contains("fsck: 100%"), "\(plainFsck.stderr)")
        #expect(plainFsck.stderr.contains("/s"), "\(plainFsck.stderr)")

        // script(1) runs the command on a pseudo-terminal and copies what it drew.
        let command = "\(depotExecutable) fsck --data-dir \(data.path)"
        var arguments = ["-qec", command, "/dev/null"]
        arguments = ["DEPOT_PROGRESS_INTERVAL=0", "/usr/bin/script"] + arguments
        let onTerminal = try await spawn("/usr/bin/env", arguments)
        let drawn = String(decoding: onTerminal.stdout, as: UTF8.self)
        #expect(onTerminal.status == 0, "\(drawn)")
        #expect(drawn.contains("\r\u{1B}[K"), "the bar redraws in place: \(drawn.debugDescription)")
        #expect(drawn.contains("fsck [") && drawn.contains("ETA") && drawn.contains("/s"), "\(drawn.debugDescription)")
        #expect(drawn.contains("########################] 100%"), "\(drawn.debugDescription)")
        #expect(!drawn.contains("fsck: "), "no plain lines on a terminal: \(drawn.debugDescription)")
    }
}

/// An active raw image in Glance holding `bytes`, created as Alice; returns its id.
func createActiveImage(_ glanceURL: String, _ bytes: [UInt8]) async throws -> String {
    let dir = TemporaryDirectory("depot-cli-image")
    let file = dir.path + "/image.raw"
    try Data(bytes).write(to: URL(fileURLWithPath: file))
    let created = try await spawn("/usr/bin/curl", [
        "-sf", "-X", "POST", "-H", "X-Auth-Token: \(GlanceServer.alice)", "-H", "Content-Type: application/json",
        "-d", #"{"name": "cli-test", "disk_format": "raw", "container_format": "bare"}"#, glanceURL + "/v2/images",
    ])
    let id = try #require((try JSONSerialization.jsonObject(with: Data(created.stdout)) as? [String: Any])?["id"] as? String)
    let uploaded = try await spawn("/usr/bin/curl", [
        "-sf", "-X", "PUT", "-H", "X-Auth-Token: \(GlanceServer.alice)", "-H", "Content-Type: application/octet-stream", "-T", file,
        glanceURL + "/v2/images/\(id)/file",
    ])
    #expect(uploaded.status == 0)
    return id
}
