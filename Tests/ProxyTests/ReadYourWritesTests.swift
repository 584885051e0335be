import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Testing

/// Read-your-writes after write-back uploads: every OpenStack client flow gives the same
/// results through Depot, before its push lands, as straight to Glance. Glance is the
/// reference: each flow runs against Glance directly and against Depot with its push queue
/// stopped (the worst case: the push has not even started).
@Suite(.serialized) struct ReadYourWritesTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    static let alice = [("X-Auth-Token", GlanceServer.alice)]
    static let json = [("Content-Type", "application/json")]
    /// Fields that name or date one image, not its state.
    static let identity: Set<String> = ["id", "created_at", "updated_at", "self", "file", "name"]

    /// One client flow's view of an image's record at each step, without its identity.
    func flow(_ base: String, client: WireClient, name: String, steps: [Step]) async throws -> [String] {
        let created = try await client.exchange("POST", base + "/v2/images", headers: Self.alice + Self.json, body: Array(
            #"{"name": "\#(name)", "disk_format": "raw", "container_format": "bare"}"#.utf8))
        let id = try #require(created.json?["id"] as? String, "\(created.status) \(String(decoding: created.body, as: UTF8.self))")
        var seen: [String] = []
        for step in steps {
            let answer: WireClient.Exchange
            switch step {
            case let .upload(bytes):
                answer = try await client.exchange("PUT", base + "/v2/images/\(id)/file", headers: Self.alice + [("Content-Type", "application/octet-stream")], body: bytes)
            case let .stage(bytes):
                answer = try await client.exchange("PUT", base + "/v2/images/\(id)/stage", headers: Self.alice + [("Content-Type", "application/octet-stream")], body: bytes)
            case .importDirect:
                answer = try await client.exchange("POST", base + "/v2/images/\(id)/import", headers: Self.alice + Self.json, body: Array(#"{"method": {"name": "glance-direct"}}"#.utf8))
            case let .action(action, token):
                answer = try await client.exchange("POST", base + "/v2/images/\(id)/actions/\(action)", headers: [("X-Auth-Token", token)])
            case .delete:
                answer = try await client.exchange("DELETE", base + "/v2/images/\(id)", headers: Self.alice)
            case let .show(untilActive):
                var shown = try await client.exchange("GET", base + "/v2/images/\(id)", headers: Self.alice)
                // Glance imports in the background: a client polls until active, as glanceclient's
                // --wait does, and until the import task let go of the image (Glance shows
                // `os_glance_import_task` for a moment after the status turned active).
                let deadline = ContinuousClock.now + .seconds(30)
                while untilActive, shown.json?["status"] as? String != "active" || shown.json?["os_glance_import_task"] != nil,
                      ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(200))
                    shown = try await client.exchange("GET", base + "/v2/images/\(id)", headers: Self.alice)
                }
                answer = shown
            }
            var view = "\(step): \(answer.status)"
            if case .show = step, let record = answer.json {
                view += " " + record.filter { !Self.identity.contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            }
            seen.append(view)
        }
        return seen
    }

    enum Step: CustomStringConvertible {
        case upload([UInt8]), stage([UInt8]), importDirect, action(String, String), delete, show(untilActive: Bool)

        var description: String {
            switch self {
            case let .upload(bytes): "upload \(bytes.count)"
            case let .stage(bytes): "stage \(bytes.count)"
            case .importDirect: "import glance-direct"
            case let .action(action, _): action
            case .delete: "delete"
            case .show: "show"
            }
        }
    }

    @Test func tempestStyleFlowsGiveGlancesAnswersBeforeThePushLands() async throws {
        try await withDepot(glanceURL: glance.url, startPushes: false) { depot in
            let client = try await WireClient()
            let bytes = pseudoRandomBytes(count: 1024, seed: 601)
            let flows: [(String, [Step])] = [
                ("upload then show", [.upload(bytes), .show(untilActive: false)]),
                ("upload, deactivate, reactivate", [
                    .upload(bytes), .action("deactivate", GlanceServer.alice), .show(untilActive: false), .action("reactivate", GlanceServer.admin),
                    .show(untilActive: false),
                ]),
                ("stage, show, import", [.stage(bytes), .show(untilActive: false), .importDirect, .show(untilActive: true)]),
                ("upload then delete", [.upload(bytes), .delete, .show(untilActive: false)]),
            ]
            var differences: [String] = []
            for (name, steps) in flows {
                let reference = try await flow(glance.url, client: client, name: name, steps: steps)
                let through = try await flow(depot.url, client: client, name: name, steps: steps)
                print("\(name):\n  Glance: \(reference.joined(separator: "\n          "))\n  Depot:  \(through.joined(separator: "\n          "))")
                if reference != through { differences.append(name) }
            }
            #expect(differences.isEmpty, "flows that differ: \(differences)")
            // The pushes then land, and Glance agrees with what Depot showed.
            depot.startPushes()
            for push in try depot.catalog.pushes() { _ = try await depot.settledPush(push.imageID) }
            #expect(try depot.catalog.pushes(in: [.pending, .staged]).isEmpty)
        }
    }

    /// A list whose limit is near Int.max, while Depot owes Glance an image: Depot asks
    /// Glance for a page of the limit plus the owed images, and that sum trapped, crashing the
    /// server on a client's query. Answered as Glance answers it, the owed image included.
    @Test func aListWithALimitNearIntMaxIsAnsweredWhileAnImageIsOwed() async throws {
        try await withDepot(glanceURL: glance.url, startPushes: false) { depot in
            let client = try await WireClient()
            let owner = "dave:projLim\(UInt32.random(in: 0...UInt32.max)):member,reader"
            let token = [("X-Auth-Token", owner)]
            let created = try await client.exchange("POST", depot.url + "/v2/images", headers: token + Self.json, body: Array(
                #"{"name": "owed-limit", "disk_format": "raw", "container_format": "bare"}"#.utf8))
            let id = try #require(created.json?["id"] as? String)
            let put = try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: token, body: pseudoRandomBytes(count: 1500, seed: 77))
            #expect(put.status == 204)
            #expect(try depot.catalog.pushes(in: [.pending, .staged]).contains { $0.imageID == id })
            let project = String(owner.split(separator: ":")[1])
            for limit in ["9223372036854775806", "9223372036854775807", "9223372036854775800", "-1"] {
                let query = "/v2/images?limit=\(limit)&owner=\(project)"
                let viaDepot = try await client.exchange("GET", depot.url + query, headers: token)
                let viaGlance = try await client.exchange("GET", glance.url + query, headers: token)
                #expect(viaDepot.status == viaGlance.status, "limit=\(limit): Depot \(viaDepot.status), Glance \(viaGlance.status)")
                if viaDepot.status == 200 {
                    let images = viaDepot.json?["images"] as? [[String: Any]] ?? []
                    #expect(images.map { $0["id"] as? String } == [id], "limit=\(limit)")
                    #expect(images.first?["status"] as? String == "active", "the owed image as it will be")
                }
            }
        }
    }

    @Test func listsFiltersSortingPagingAndMembersSeeTheImageAsItWillBe() async throws {
        try await withDepot(glanceURL: glance.url, startPushes: false) { depot in
            let client = try await WireClient()
            // A project of its own, so the lists hold only this test's images.
            let owner = "carol:projRYW\(UInt32.random(in: 0...UInt32.max)):member,reader"
            let token = [("X-Auth-Token", owner)]
            var ids: [String] = []
            for (index, size) in [3000, 1000, 5000, 2000].enumerated() {
                let created = try await client.exchange("POST", depot.url + "/v2/images", headers: token + Self.json, body: Array(
                    #"{"name": "ryw-\#(index)", "disk_format": "raw", "container_format": "bare", "visibility": "shared"}"#.utf8))
                let id = try #require(created.json?["id"] as? String)
                ids.append(id)
                // Two uploaded through Depot (owed), one straight to Glance, one left queued.
                let put = pseudoRandomBytes(count: size, seed: UInt64(610 + index))
                switch index {
                case 0, 2: #expect(try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: token, body: put).status == 204)
                case 1:
                    let direct = try await client.exchange("PUT", glance.url + "/v2/images/\(id)/file", headers: token + [("Content-Type", "application/octet-stream")], body: put)
                    #expect(direct.status == 204)
                default: break
                }
            }
            // Only this project's images. Paging over a sort on size skips the queued image: Glance's
            // own pagination over a null sort value goes round in circles (seen with Glance 33:
            // sort_key=size&sort_dir=desc&limit=1 over a queued image repeats two images forever).
            let project = String(owner.split(separator: ":")[1])
            let queries = [
                "", "?status=active", "?status=queued", "?size_min=2500", "?size_max=3500", "?sort_key=size&sort_dir=asc", "?sort=size:desc,name:asc",
                "?sort_key=name&sort_dir=asc&limit=1", "?status=active&sort_key=size&sort_dir=desc&limit=2", "?status=active&sort_key=size&sort_dir=asc&limit=1",
                "?limit=1", "?visibility=shared&sort_key=name&sort_dir=desc&limit=3", "?size_min=1500&sort=name:desc&limit=1",
            ].map { $0.isEmpty ? "?owner=\(project)" : $0 + "&owner=\(project)" }
            func traverse(_ base: String, _ query: String, _ headers: [(String, String)]) async throws -> [String] {
                var names: [String] = []
                var next: String? = "/v2/images" + query
                var pages = 0
                while let path = next, pages < 20 {
                    let page = try await client.exchange("GET", base + path, headers: headers)
                    #expect(page.status == 200, "\(path): \(String(decoding: page.body, as: UTF8.self))")
                    let images = page.json?["images"] as? [[String: Any]] ?? []
                    names += images.map { "\($0["name"] ?? "?")/\($0["status"] ?? "?")/\($0["size"] ?? "null")" }
                    next = page.json?["next"] as? String
                    pages += 1
                }
                return names
            }
            // Bob is a member of every image; he sees them as Alice's project does.
            let bob = [("X-Auth-Token", GlanceServer.bob)]
            for id in ids {
                _ = try await client.exchange("POST", depot.url + "/v2/images/\(id)/members", headers: token + Self.json, body: Array(#"{"member": "projB"}"#.utf8))
                _ = try await client.exchange("PUT", depot.url + "/v2/images/\(id)/members/projB", headers: bob + Self.json, body: Array(#"{"status": "accepted"}"#.utf8))
            }
            var before: [String: [String]] = [:]
            for query in queries { before[query] = try await traverse(depot.url, query, token) }
            let memberQuery = "?member_status=accepted&visibility=shared&sort_key=size&sort_dir=asc"
            before["bob" + memberQuery] = try await traverse(depot.url, memberQuery, bob)
            let shownToBob = try await client.exchange("GET", depot.url + "/v2/images/\(ids[0])", headers: bob)
            #expect(shownToBob.json?["status"] as? String == "active" && shownToBob.json?["size"] as? Int == 3000, "a member sees the image as it will be")

            depot.startPushes()
            for id in [ids[0], ids[2]] { #expect(try await depot.settledPush(id).state == .done) }
            for query in queries {
                let after = try await traverse(glance.url, query, token)
                #expect(before[query] == after, "\(query): Depot before the push \(before[query] ?? []), Glance after \(after)")
            }
            let bobAfter = try await traverse(glance.url, memberQuery, bob)
            #expect(before["bob" + memberQuery] == bobAfter, "members: \(before["bob" + memberQuery] ?? []) vs \(bobAfter)")
            print("lists compared: \(queries.count + 1) queries, \(before.values.map(\.count).reduce(0, +)) entries")
        }
    }

    @Test func clientsSeeTheirUploadAtOnce() async throws {
        try await withDepot(glanceURL: glance.url, startPushes: false) { depot in
            let dir = TemporaryDirectory("depot-ryw-clients")
            let file = dir.path + "/image.raw"
            let bytes = pseudoRandomBytes(count: 3 << 20, seed: 620)
            _ = FileManager.default.createFile(atPath: file, contents: Data(bytes))
            // glanceclient prints the image it just uploaded.
            let created = try await glanceCLI(depot.url, token: GlanceServer.alice, [
                "image-create", "--name", "ryw-cli", "--disk-format", "raw", "--container-format", "bare", "--file", file,
            ])
            #expect(created.status == 0, "\(created.output)")
            #expect(created.output.contains("| status") && created.output.range(of: #"\| status\s+\| active"#, options: .regularExpression) != nil, "\(created.output)")
            #expect(created.output.range(of: #"\| size\s+\| 3145728"#, options: .regularExpression) != nil, "\(created.output)")
            // openstacksdk waits for active: it does not wait for the push.
            let script = """
            import openstack, sys, time
            conn = openstack.connect(auth_type="admin_token", auth={"endpoint": sys.argv[1], "token": sys.argv[2]},
                                     image_endpoint_override=sys.argv[1], load_envvars=False, load_yaml_config=False)
            started = time.monotonic()
            image = conn.create_image("ryw-sdk", filename=sys.argv[3], disk_format="raw", container_format="bare", wait=True, timeout=60)
            image = conn.image.get_image(image.id)
            print(image.status, image.size, image.checksum, round(time.monotonic() - started, 1))
            """
            let sdk = try await spawn(await GlanceServer.venv + "/bin/python", ["-c", script, depot.url, GlanceServer.alice, file])
            let printed = String(decoding: sdk.stdout, as: UTF8.self).split(separator: " ")
            #expect(sdk.status == 0)
            #expect(printed.first == "active" && printed.count >= 3 && printed[1] == "3145728", "\(printed)")
            #expect(printed.count >= 3 && printed[2] == Digest.of(bytes, algorithm: .md5).hex)
        }
    }

    @Test func anActionThatCannotWaitForThePushGets503AndADeleteCancelsIt() async throws {
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        var settings = CacheSettings.testing
        settings.push.landingWait = .seconds(2)
        try await withDepot(glanceURL: proxy.url, settings: settings, startPushes: false) { depot in
            let client = try await WireClient()
            let bytes = pseudoRandomBytes(count: 4 << 20, seed: 630)
            let created = try await client.exchange("POST", depot.url + "/v2/images", headers: Self.alice + Self.json, body: Array(
                #"{"name": "ryw-slow", "disk_format": "raw", "container_format": "bare"}"#.utf8))
            let id = try #require(created.json?["id"] as? String)
            #expect(try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: Self.alice, body: bytes).status == 204)
            // Each 64 KiB of the push's upload waits 100 ms: 6 s for the 4 MiB.
            proxy.setFaults { $0.latency = .milliseconds(100) }
            let asked = ContinuousClock.now
            let refused = try await client.exchange("POST", depot.url + "/v2/images/\(id)/actions/deactivate", headers: Self.alice)
            let waited = ContinuousClock.now - asked
            #expect(refused.status == 503)
            // The wait ends at push.action_wait (2 s), not when the 6 s transfer does: judged by
            // order (the push is still under way when the 503 arrives), not by a clock bound,
            // which a loaded machine stretches.
            let owed = try depot.catalog.push(cloud: "default_RegionOne", imageID: id)
            #expect(owed != nil && owed?.state != .done, "the 503 came after the transfer ended (\(waited))")
            #expect(refused.header("retry-after") != nil)
            #expect((refused.json?["error"] as? [String: Any])?["message"] as? String != nil)
            proxy.setFaults { $0.latency = nil }

            // A second image: deleted while its push is owed, it is owed no more.
            let other = try await client.exchange("POST", depot.url + "/v2/images", headers: Self.alice + Self.json, body: Array(
                #"{"name": "ryw-deleted", "disk_format": "raw", "container_format": "bare"}"#.utf8))
            let otherID = try #require(other.json?["id"] as? String)
            #expect(try await client.exchange("PUT", depot.url + "/v2/images/\(otherID)/file", headers: Self.alice, body: Array(bytes.prefix(1000))).status == 204)
            #expect(try await client.exchange("DELETE", depot.url + "/v2/images/\(otherID)", headers: Self.alice).status == 204)
            #expect(try depot.catalog.push(cloud: "default_RegionOne", imageID: otherID) == nil, "nothing owed")
            let listed = try await curl("\(depot.url)/depot/v1/pushes", token: DepotHarness.adminToken)
            #expect(!String(decoding: listed.body, as: UTF8.self).contains(otherID))
            #expect(try await client.exchange("GET", glance.url + "/v2/images/\(otherID)", headers: Self.alice).status == 404)
            // The first one's push lands once the link is back; Glance then holds it.
            depot.startPushes()
            #expect(try await depot.settledPush(id).state == .done)
            let file = depot.dir.path + "/uploaded"
            _ = FileManager.default.createFile(atPath: file, contents: Data(bytes))
            try await expectGlanceHolds(glance.url, id, bytesOf: file)
        }
    }

    @Test func aPushThatFailsForGoodAfterThe204GivesTheImageBackToGlance() async throws {
        // Glance refuses more than 2000 bytes; Depot, configured for more, took them.
        let small = try await GlanceServer.start(configuration: "[DEFAULT]\nimage_size_cap = 2000\n")
        defer { small.stop() }
        try await withDepot(glanceURL: small.url, startPushes: false) { depot in
            let client = try await WireClient()
            let created = try await client.exchange("POST", depot.url + "/v2/images", headers: Self.alice + Self.json, body: Array(
                #"{"name": "ryw-too-big", "disk_format": "raw", "container_format": "bare"}"#.utf8))
            let id = try #require(created.json?["id"] as? String)
            #expect(try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: Self.alice, body: pseudoRandomBytes(count: 5000, seed: 640)).status == 204)
            #expect(try await client.exchange("GET", depot.url + "/v2/images/\(id)", headers: Self.alice).json?["status"] as? String == "active")
            depot.startPushes()
            let push = try await depot.settledPush(id)
            #expect(push.state == .failed)
            let shown = try await client.exchange("GET", depot.url + "/v2/images/\(id)", headers: Self.alice)
            #expect(shown.json?["status"] as? String == "queued", "Glance's own state again")
            let listed = try await curl("\(depot.url)/depot/v1/pushes", token: DepotHarness.adminToken)
            #expect(String(decoding: listed.body, as: UTF8.self).contains("too large"))
            #expect(try depot.cache.stats()["push_failures_after_ack"] as? Int == 1)
        }
    }

    /// An answer Glance gave before an upload's push landed, used after the push landed and
    /// Depot let the blob go (and with it, every row saying it owed the bytes), must not show
    /// the image without data. Found by the crash loop (seed 24422510): a range read got
    /// Glance's stale "queued" and answered 204 for an image Depot had acknowledged.
    @Test func answersGlanceGaveBeforeAPushLandedAreNotUsedAfterItsBlobWentAway() async throws {
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        try await withDepot(glanceURL: proxy.url, startPushes: false) { depot in
            let client = try await WireClient()
            let reader = "dave:projLanding\(UInt32.random(in: 0...UInt32.max)):member,reader"
            let token = [("X-Auth-Token", reader)]
            /// Uploads a new image through Depot, starts `read` with Glance's answer to the
            /// reader's GET of `heldPath` held, lands the push, evicts the blob, then lets the
            /// answer through; returns what `read` got and the image's bytes.
            func readAcrossTheLanding(
                _ name: String, heldPath: @escaping @Sendable (String) -> String, _ read: @escaping @Sendable (String) async throws -> WireClient.Exchange
            ) async throws -> (answer: WireClient.Exchange, id: String, bytes: [UInt8]) {
                let created = try await client.exchange("POST", depot.url + "/v2/images", headers: token + Self.json, body: Array(
                    #"{"name": "\#(name)", "disk_format": "raw", "container_format": "bare"}"#.utf8))
                let id = try #require(created.json?["id"] as? String)
                let bytes = pseudoRandomBytes(count: 200_000, seed: UInt64(650 + name.count))
                #expect(try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: token, body: bytes).status == 204)
                let path = heldPath(id)
                proxy.setFaults { $0.holdResponsesTo = { $0.method == "GET" && $0.path == path && $0.header("x-auth-token") == reader } }
                let reading = Task { try await read(id) }
                let deadline = ContinuousClock.now + .seconds(30)
                while proxy.heldResponses == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
                #expect(proxy.heldResponses == 1, "\(name): Glance's answer to \(path) was held")
                #expect(await depot.cache.landAcknowledgedBytes(cloud: "default_RegionOne", imageID: id, wait: .seconds(60)) == .landed)
                try await depot.cache.evict(Digest.of(bytes, algorithm: .sha256))
                #expect(try depot.catalog.push(cloud: "default_RegionOne", imageID: id) == nil, "the push's row went with its blob")
                proxy.setFaults { $0.holdResponsesTo = nil }
                return (try await reading.value, id, bytes)
            }

            let ranged = try await readAcrossTheLanding("landing-range", heldPath: { "/v2/images/\($0)" }) { id in
                try await client.exchange("GET", depot.url + "/v2/images/\(id)/file", headers: token + [("Range", "bytes=1000-5095")])
            }
            #expect(ranged.answer.status == 206 && ranged.answer.body == Array(ranged.bytes[1000...5095]), "range: \(ranged.answer.status), \(ranged.answer.body.count) bytes")

            let shown = try await readAcrossTheLanding("landing-show", heldPath: { "/v2/images/\($0)" }) { id in
                try await client.exchange("GET", depot.url + "/v2/images/\(id)", headers: token)
            }
            #expect(shown.answer.json?["status"] as? String == "active" && shown.answer.json?["size"] as? Int == 200_000, "show: \(shown.answer.json ?? [:])")

            let listed = try await readAcrossTheLanding("landing-list", heldPath: { _ in "/v2/images" }) { _ in
                try await client.exchange("GET", depot.url + "/v2/images?name=landing-list", headers: token)
            }
            let entry = (listed.answer.json?["images"] as? [[String: Any]])?.first { $0["id"] as? String == listed.id }
            #expect(entry?["status"] as? String == "active", "list: \(listed.answer.json ?? [:])")

            // A second upload read "queued" before the first one's push landed: Glance refuses
            // it (409), and so must Depot rather than acknowledge bytes Glance will not take.
            let second = try await readAcrossTheLanding("landing-upload", heldPath: { "/v2/images/\($0)" }) { id in
                try await client.exchange("PUT", depot.url + "/v2/images/\(id)/file", headers: token, body: pseudoRandomBytes(count: 1000, seed: 660))
            }
            #expect(second.answer.status == 409, "second upload: \(second.answer.status) \(String(decoding: second.answer.body, as: UTF8.self))")
        }
    }
}
