import DepotTestSupport
import Foundation
import Testing

/// `depot serve` checks each backend URL at start: a URL that is not a Glance is a mistake in
/// the configuration and Depot refuses to start; a backend that does not answer is not, and
/// Depot serves its cache.
@Suite struct ServeBackendCheckTests {
    /// Runs `depot serve` and waits up to `timeout` for it to exit; kills it if it does not.
    func serveExpectingExit(glanceURL: String, timeout: TimeInterval = 60) async throws -> Outcome? {
        let dataDir = TemporaryDirectory("depot-serve-check")
        let errPath = dataDir.path + ".stderr"
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let serve = try await ChildProcess.start(
            [depotExecutable, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir.path, "--glance-url", glanceURL, "--service-token", "depot:service:admin"],
            stderrPath: errPath)
        let deadline = Date().addingTimeInterval(timeout)
        while serve.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        guard !serve.isRunning else {
            _ = await serve.stop(signal: SIGTERM)
            return nil
        }
        let status = await serve.wait()
        let errText = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return Outcome(status: status.map(exitStatus) ?? -1, stdout: Data(), stderr: errText)
    }

    @Test func aVersionSuffixIsRefusedWithTheFix() async throws {
        let glance = try await GlanceServer.shared()
        let outcome = try #require(try await serveExpectingExit(glanceURL: glance.url + "/v2"), "depot serve started with a /v2 URL")
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("ends in /v2; give the endpoint without it (\(glance.url))"), "\(outcome.stderr)")
    }

    @Test func aWebServerThatIsNotGlanceIsRefused() async throws {
        let web = try await StaticWebServer.start()
        defer { web.stop() }
        let outcome = try #require(try await serveExpectingExit(glanceURL: web.url), "depot serve started in front of a web server")
        #expect(outcome.status != 0)
        #expect(outcome.stderr.contains("answered 404 with HTML"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("not an image service"), "\(outcome.stderr)")
    }

    @Test func anUnreachableBackendStartsAndIsReported() async throws {
        let port = try freeLoopbackPort()
        let dataDir = TemporaryDirectory("depot-serve-check")
        let depot = try await DepotProcess.start(["--data-dir", dataDir.path, "--glance-url", "http://127.0.0.1:\(port)", "--service-token", "t"])
        defer { depot.stopBlocking() }
        let ready = try await spawn("/usr/bin/curl", ["-s", depot.url + "/readyz"])
        let report = try JSONSerialization.jsonObject(with: Data(ready.stdout)) as? [String: Any]
        let summary = (report?["clouds"] as? [String: String])?["default_RegionOne"] ?? ""
        #expect(summary.hasPrefix("unreachable: "), "\(summary)")
        #expect(report?["status"] as? String == "ready")
    }
}
