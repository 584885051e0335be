import BlobStore
import Cache
import DepotTestSupport
import Foundation
import Glance
import Testing

/// The operator's tools against a running Depot: Glance's cache CLI, depot cache/pushes/fsck.
@Suite(.serialized) struct OperatorToolsTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func glanceCacheCommandsWorkAgainstDepotUnchanged() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let cachedBytes = pseudoRandomBytes(count: 3 << 20, seed: 81)
            let cached = try await uploadImage(glanceAsAlice(glance.url), cachedBytes)
            let queued = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 2 << 20, seed: 82))
            #expect(try await download("\(depot.url)/v2/images/\(cached.id)/file").status == 200)
            #expect(try await download("\(depot.url)/v2/images/\(cached.id)/file").cache == "hit")
            depot.cache.flushHits()

            let list = try await glanceCLI(depot.url, token: DepotHarness.adminToken, ["cache-list"])
            #expect(list.status == 0, "\(list.output)")
            let row = list.output.split(separator: "\n").first { $0.contains(cached.id) }
            #expect(row?.contains("cached") == true, "\(list.output)")
            #expect(row?.contains("3145728") == true, "\(list.output)")

            // cache-queue prefetches with Depot's own credentials.
            let queue = try await glanceCLI(depot.url, token: DepotHarness.adminToken, ["cache-queue", queued.id])
            #expect(queue.status == 0, "\(queue.output)")
            let deadline = ContinuousClock.now + .seconds(30)
            while try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: queued.id) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: queued.id) != nil)

            let delete = try await glanceCLI(depot.url, token: DepotHarness.adminToken, ["cache-delete", cached.id])
            #expect(delete.status == 0, "\(delete.output)")
            #expect(!depot.store.contains(Digest.of(cachedBytes, algorithm: .sha256)))
            let clear = try await glanceCLI(depot.url, token: DepotHarness.adminToken, ["cache-clear", "--target", "cache"])
            #expect(clear.status == 0, "\(clear.output)")
            #expect(try depot.store.allDigests().isEmpty)

            // Alice is not an admin: Glance's client reports the refusal.
            let refused = try await curl("\(depot.url)/v2/cache")
            #expect(refused.status == 403)
            #expect(errorMessage(refused).contains("admin"))
        }
    }

    @Test func fsckRebuildsALostCatalogSoEveryCachedImageIsServedAgain() async throws {
        var images: [(GlanceImage, [UInt8])] = []
        for n in 0..<3 {
            let bytes = pseudoRandomBytes(count: (2 + n) << 20, seed: UInt64(83 + n))
            images.append((try await uploadImage(glanceAsAlice(glance.url), bytes), bytes))
        }
        let counter = try FaultProxy(upstreamPort: glance.port)
        defer { counter.stop() }
        let data = TemporaryDirectory("depot-fsck")
        let arguments = [
            "--listen", "127.0.0.1:0", "--data-dir", data.path, "--glance-url", counter.url, "--service-token", DepotHarness.serviceToken,
            "--admin-token", DepotHarness.adminToken,
        ]
        let first = try await DepotProcess.start(arguments)
        for (image, _) in images { #expect(try await download("\(first.url)/v2/images/\(image.id)/file").status == 200) }
        // /metrics (Prometheus text from swift-metrics) counts what was just served.
        let metrics = try await curl("\(first.url)/metrics", token: nil)
        let text = String(decoding: metrics.body, as: UTF8.self)
        #expect(metrics.status == 200)
        #expect(text.contains("depot_cache_requests_total{result=\"miss\"} 3"), "\(text.prefix(2000))")
        #expect(text.contains("depot_http_requests_total{route=\"image_file\",status=\"200\"} 3"))
        #expect(text.contains("depot_fills_total{outcome=\"committed\"} 3"))
        // The access log has one line per request, with its id.
        #expect(first.log.contains("depot.access"))
        let ls = try await spawn(depotExecutable, ["cache", "ls", "--url", first.url, "--admin-token", DepotHarness.adminToken, "--json"])
        #expect(ls.status == 0)
        let listed = try JSONSerialization.jsonObject(with: Data(ls.stdout)) as? [String: Any]
        #expect((listed?["blobs"] as? [Any])?.count == 3)
        // A hit on the event loop just before SIGTERM: its line is written at shutdown.
        #expect(try await download("\(first.url)/v2/images/\(images[0].0.id)/file").cache == "hit")
        _ = await first.stop()
        // swift-log's StreamLogHandler format: "TIMESTAMP LEVEL LABEL: KEY=VALUE… (keys sorted) [SOURCE] MESSAGE".
        let accessLines = first.log.split(separator: "\n").filter { $0.contains(" depot.access: ") }
        let stamp = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} info depot\.access: "#
        for (image, bytes) in images {
            let path = "/v2/images/\(image.id)/file"
            let miss = stamp + #"bytes=\#(bytes.count) cache=miss duration_ms=\d+\.\d request=[0-9a-f]+ \[Proxy\] GET \#(path) 200$"#
            #expect(accessLines.filter { $0.contains(try! Regex(miss)) }.count == 1, "\(accessLines)")
        }
        let hit = stamp + #"bytes=\#(images[0].1.count) cache=hit duration_ms=\d+\.\d path=fast \[Proxy\] GET /v2/images/\#(images[0].0.id)/file 200$"#
        #expect(accessLines.filter { $0.contains(try! Regex(hit)) }.count == 1, "\(accessLines)")

        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: data.path + "/catalog.sqlite" + suffix) }
        let fsck = try await spawn(depotExecutable, ["fsck", "--data-dir", data.path, "--json"])
        #expect(fsck.status == 0)
        let report = try JSONSerialization.jsonObject(with: Data(fsck.stdout)) as? [String: Any]
        #expect(report?["catalog_rebuilt"] as? Bool == true)
        #expect(report?["blobs_checked"] as? Int == 3)
        #expect((report?["files_without_row"] as? [Any])?.count == 3)
        #expect((report?["corrupt"] as? [Any])?.isEmpty == true)

        // A second run finds nothing left to fix.
        let again = try await spawn(depotExecutable, ["fsck", "--data-dir", data.path])
        #expect(again.status == 0)
        #expect(String(decoding: again.stdout, as: UTF8.self).contains("no problems found"))

        let second = try await DepotProcess.start(arguments)
        defer { second.stopBlocking() }
        counter.resetCounters()
        for (image, bytes) in images {
            let result = try await download("\(second.url)/v2/images/\(image.id)/file")
            #expect(result.sha256 == Digest.of(bytes, algorithm: .sha256).hex)
            #expect(result.cache == "hit")
        }
        // Only metadata crossed to Glance: no image bytes.
        #expect(counter.bytesFromServer < 64 << 10, "\(counter.bytesFromServer) bytes from Glance")
    }

    @Test func fsckQuarantinesACorruptBlob() async throws {
        let data = TemporaryDirectory("depot-fsck-corrupt")
        let store = try BlobStore(dataDirectory: data.path)
        let writer = try store.makeWriter()
        try writer.write(pseudoRandomBytes(count: 1 << 20, seed: 86))
        let blob = try writer.commit()
        // Flip a byte behind the store's back.
        let fd = open(blob.path, O_WRONLY)
        var byte: UInt8 = 0x5A
        _ = pwrite(fd, &byte, 1, 4096)
        close(fd)
        let fsck = try await spawn(depotExecutable, ["fsck", "--data-dir", data.path])
        #expect(fsck.status == 1)
        #expect(String(decoding: fsck.stdout, as: UTF8.self).contains("corrupt"))
        #expect(!store.contains(blob.digest))
        #expect(!data.files(under: "quarantine").isEmpty)
    }
}
