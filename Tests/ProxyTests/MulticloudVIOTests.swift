import BlobStore
import DepotTestSupport
import Foundation
import Glance
import Testing

/// ONAP Multicloud's VIO image routes, as ONAP's callers send them (curl -F, JSON imagePath).
@Suite(.serialized) struct MulticloudVIOTests {
    let glance: GlanceServer
    static let vio = "/api/multicloud-vio/v0/default_RegionOne"

    init() async throws { glance = try await GlanceServer.shared() }

    /// Sends `{"imagePath": path}` (JSON-encoded by JSONSerialization, so any string goes).
    func export(_ depot: DepotHarness, tenant: String = "projA", imageID: String, path: String, token: String = GlanceServer.alice) async throws -> CurlResult {
        let body = try JSONSerialization.data(withJSONObject: ["imagePath": path])
        let file = NSTemporaryDirectory() + "depot-vio-\(UUID().uuidString).json"
        try body.write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try await curl("\(depot.url)\(Self.vio)/\(tenant)/images/file/\(imageID)", token: token, [
            "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + file,
        ])
    }

    @Test func onapUploadCreatesTheImageNamedAfterItsFileAndDownloadServesIt() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let bytes = pseudoRandomBytes(count: 3 << 20, seed: 161)
            let file = depot.dir.path + "/onap-demo.raw"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let upload = try await curl("\(depot.url)\(Self.vio)/projA/images/file", ["-F", "file=@\(file)"])
            #expect(upload.status == 201, "\(errorMessage(upload))")
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(upload.body)) as? [String: Any])
            #expect(answer["status"] as? String == "upload OK")
            let id = try #require(answer["id"] as? String)
            #expect(try await depot.settledPush(id).state == .done)
            let image = try await glanceAsAlice(glance.url).showImage(id)
            #expect(image.name == "onap-demo")
            #expect(image["disk_format"]?.stringValue == "raw")
            #expect(image.owner == "projA")
            #expect(image.checksum == Digest.of(bytes, algorithm: .md5).hex)

            let download = try await curl("\(depot.url)\(Self.vio)/projA/images/file/\(id)")
            #expect(download.status == 200)
            #expect(download.body == bytes)
            let range = try await curl("\(depot.url)\(Self.vio)/projA/images/file/\(id)", ["-r", "100-199"])
            #expect(range.status == 206 && range.body == Array(bytes[100...199]))
            // Bob's own project, but Alice's private image: Glance's answer.
            #expect(try await curl("\(depot.url)\(Self.vio)/projB/images/file/\(id)", token: GlanceServer.bob).status == 404)
        }
    }

    @Test func theTenantMustBeTheTokensProject() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let file = depot.dir.path + "/refused.raw"
            try Data(pseudoRandomBytes(count: 1 << 20, seed: 162)).write(to: URL(fileURLWithPath: file))
            let image = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 1 << 20, seed: 163), visibility: "community")

            let otherTenant = try await curl("\(depot.url)\(Self.vio)/projB/images/file", ["-F", "file=@\(file)"])
            #expect(otherTenant.status == 403)
            #expect(errorMessage(otherTenant).contains("projA") && errorMessage(otherTenant).contains("projB"), "\(errorMessage(otherTenant))")
            let noToken = try await curl("\(depot.url)\(Self.vio)/projA/images/file", token: nil, ["-F", "file=@\(file)"])
            #expect(noToken.status == 401)
            let unknownVIM = try await curl("\(depot.url)/api/multicloud-vio/v0/nowhere_RegionOne/projA/images/file/\(image.id)")
            #expect(unknownVIM.status == 404)
            #expect(errorMessage(unknownVIM).contains("default_RegionOne"))
            // An image every project may read, still refused when the path's tenant is not the token's.
            #expect(try await curl("\(depot.url)\(Self.vio)/projB/images/file/\(image.id)").status == 403)
            #expect(try await curl("\(depot.url)\(Self.vio)/projB/images/file/\(image.id)", token: GlanceServer.bob).status == 200)
            let created = try await glanceAsAlice(glance.url).listImages(filters: [("name", "refused")])
            #expect(created.isEmpty, "a refused upload created \(created.map(\.id))")
        }
    }

    @Test func exportIsOffUntilTheOperatorNamesADirectory() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let image = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 1 << 20, seed: 164))
            let refused = try await export(depot, imageID: image.id, path: depot.dir.path)
            #expect(refused.status == 403)
            #expect(errorMessage(refused).contains("multicloud.export_dir"), "\(errorMessage(refused))")
        }
    }

    @Test func imagePathWritesOnlyInsideTheExportDirectory() async throws {
        let root = TemporaryDirectory("depot-vio-export")
        let exportDir = root.path + "/export", outside = root.path + "/outside"
        for dir in [exportDir + "/sub/deeper", outside] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try FileManager.default.createSymbolicLink(atPath: exportDir + "/out", withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: exportDir + "/in", withDestinationPath: exportDir + "/sub")
        // A file name planted as a symlink to a file outside: replaced, never written through.
        try Data("victim".utf8).write(to: URL(fileURLWithPath: outside + "/victim"))
        try FileManager.default.createSymbolicLink(atPath: exportDir + "/sub/export-me.raw", withDestinationPath: outside + "/victim")

        try await withDepot(glanceURL: glance.url, exportDirectory: exportDir) { depot in
            let bytes = pseudoRandomBytes(count: 2 << 20, seed: 165)
            let alice = glanceAsAlice(glance.url)
            var created = try await alice.createImage([
                "name": .string("export-me"), "disk_format": .string("raw"), "container_format": .string("bare"),
            ])
            try await alice.uploadImageData(created.id, from: .bytes(bytes))
            created = try await alice.showImage(created.id)

            for path in ["sub", exportDir + "/sub/deeper", exportDir + "//sub/./deeper/"] {
                let answer = try await export(depot, imageID: created.id, path: path)
                #expect(answer.status == 200, "\(path): \(errorMessage(answer))")
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: exportDir + "/sub/export-me.raw")) == Data(bytes))
            #expect(try FileManager.default.attributesOfItem(atPath: exportDir + "/sub/export-me.raw")[.type] as? FileAttributeType == .typeRegular)
            #expect(try Data(contentsOf: URL(fileURLWithPath: exportDir + "/sub/deeper/export-me.raw")) == Data(bytes))
            #expect(try String(contentsOfFile: outside + "/victim", encoding: .utf8) == "victim")

            let escapes = [
                "..", "../outside", "sub/../../outside", outside, "/etc", exportDir + "/../outside", exportDir + "-evil", "%2e%2e/outside",
                "sub%2f..%2f..%2foutside", "out", "out/", "in", "sub\\..\\..\\outside", "a\u{0}b", "\u{FF0E}\u{FF0E}/outside", "\u{2025}/outside", "",
            ]
            for path in escapes {
                let answer = try await export(depot, imageID: created.id, path: path)
                #expect(answer.status == 400, "\(path.debugDescription) answered \(answer.status)")
                #expect(errorMessage(answer).contains("outside the export directory"), "\(path.debugDescription): \(errorMessage(answer))")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside) == ["victim"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() == ["export", "outside"])
            let missing = try await export(depot, imageID: created.id, path: "nosuch")
            #expect(missing.status == 400)
            #expect(errorMessage(missing).contains("create it first"), "\(errorMessage(missing))")
            // Nothing else is left in the export directory: no temporary files.
            let files = FileManager.default.enumerator(atPath: exportDir)?.allObjects as? [String] ?? []
            #expect(files.sorted() == ["in", "out", "sub", "sub/deeper", "sub/deeper/export-me.raw", "sub/export-me.raw"], "\(files)")
            // Bob's token, his own tenant: Glance hides Alice's private image.
            #expect(try await export(depot, tenant: "projB", imageID: created.id, path: "sub", token: GlanceServer.bob).status == 404)
        }
    }
}
