import BlobStore
import DepotTestSupport
import Foundation
import Glance
import Testing

/// `depot serve` as a real deployment runs it: an ordinary user (nobody, when the tests run as
/// root), owning only its data directory. Root passes checks an ordinary user fails: Depot
/// once set TCP_NODELAY as a socket-level option (SO_DEBUG), which only root may set, and every
/// connection of a non-root Depot failed with EACCES.
@Suite(.serialized) struct UnprivilegedServeTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func anOrdinaryUserServesHitsMissesRangesUploadsAndStopsCleanly() async throws {
        let user = UnprivilegedUser.forServe
        let data = TemporaryDirectory("depot-unprivileged")
        try await user.own(data.path)
        let depot = try await DepotProcess.start([
            "--data-dir", data.path + "/data", "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
            "--admin-token", DepotHarness.adminToken, "--cache-size", "64MiB",
        ], user: user)
        var stopped = false
        defer { if !stopped { Task { await depot.stop() } } }
        let status = try String(contentsOfFile: "/proc/\(depot.pid)/status", encoding: .utf8)
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
        #expect(uidLine.split(whereSeparator: \.isWhitespace).dropFirst().allSatisfy { $0 == "\(user.uid)" }, "runs as \(user.uid): \(uidLine)")

        let client = try await WireClient()
        let alice = [("X-Auth-Token", GlanceServer.alice)]
        for _ in 0..<3 { #expect(try await client.exchange("GET", depot.url + "/healthz").status == 200, "\(depot.log.suffix(500))") }
        let ready = try await client.exchange("GET", depot.url + "/readyz")
        #expect(ready.status == 200, "\(String(decoding: ready.body, as: UTF8.self))")

        let bytes = pseudoRandomBytes(count: 5 << 20, seed: 701)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let url = depot.url + "/v2/images/\(image.id)/file"
        let miss = try await client.exchange("GET", url, headers: alice)
        #expect(miss.error == nil && miss.status == 200 && miss.body == bytes)
        for _ in 0..<2 {
            let hit = try await client.exchange("GET", url, headers: alice)
            #expect(hit.header("x-depot-cache") == "hit" && hit.body == bytes)
        }
        let range = try await client.exchange("GET", url, headers: alice + [("Range", "bytes=-1000")])
        #expect(range.status == 206 && range.body == Array(bytes.suffix(1000)))
        let head = try await client.exchange("HEAD", url, headers: alice + [("Range", "bytes=0-99")])
        #expect(head.status == 200 && head.header("content-length") == String(bytes.count))

        // An upload, acknowledged from the unprivileged Depot's disk and pushed to Glance.
        let file = data.path + "/upload.raw"
        _ = FileManager.default.createFile(atPath: file, contents: Data(pseudoRandomBytes(count: 2 << 20, seed: 702)))
        let created = try await glanceCLI(depot.url, token: GlanceServer.alice, [
            "image-create", "--name", "unprivileged", "--disk-format", "raw", "--container-format", "bare", "--file", file,
        ])
        #expect(created.status == 0, "\(created.output)")
        let id = try #require(created.output.split(separator: "\n").first { $0.contains("| id ") }?.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }.last)
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? await glanceRecord(glance.url, id))?["status"] as? String != "active", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        try await expectGlanceHolds(glance.url, id, bytesOf: file)
        let metrics = try await client.exchange("GET", depot.url + "/metrics")
        #expect(String(decoding: metrics.body, as: UTF8.self).contains("depot_http_requests_total"))

        let exit = await depot.stop(signal: SIGTERM)
        stopped = true
        #expect(exit == .exited(0), "depot exited cleanly (status \(String(describing: exit)))\n\(depot.log.suffix(2000))")
        #expect(!depot.log.contains("Permission denied"), "\(depot.log.suffix(2000))")
        // Every file it made belongs to it.
        let foreign = try await spawn("/usr/bin/find", [data.path + "/data", "!", "-uid", "\(user.uid)"])
        #expect(String(decoding: foreign.stdout, as: UTF8.self).isEmpty, "files not owned by the service user")
    }
}
