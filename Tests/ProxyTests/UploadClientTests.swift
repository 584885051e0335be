import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Proxy
import Testing

/// Real OpenStack clients and the Multicloud API uploading through Depot.
@Suite(.serialized) struct UploadClientTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// The `id` row of the table the glance CLI prints.
    func imageID(fromTable output: String) -> String? {
        for line in output.split(separator: "\n") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count >= 2, cells[0] == "id" { return cells[1] }
        }
        return nil
    }

    @Test func glanceImageCreateWithAFileUploadsThroughDepot() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let file = try TestImageFile(megabytes: 12, seed: 61)
            let created = try await glanceCLI(depot.url, token: GlanceServer.alice, [
                "image-create", "--name", "via-glanceclient", "--disk-format", "raw", "--container-format", "bare", "--file", file.path,
            ])
            #expect(created.status == 0, "\(created.output)")
            let id = try #require(imageID(fromTable: created.output))
            #expect(try await depot.settledPush(id).state == .done)
            try await expectGlanceHolds(glance.url, id, bytesOf: file.path)
            #expect(try await download("\(depot.url)/v2/images/\(id)/file").sha256 == file.sha256)
        }
    }

    @Test func openstacksdkCreateImageUploadsThroughDepot() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let file = try TestImageFile(megabytes: 10, seed: 62)
            let script = """
                import openstack, sys
                url, token, path = sys.argv[1:4]
                conn = openstack.connect(auth_type='admin_token', auth={'endpoint': url, 'token': token},
                                         image_endpoint_override=url, load_envvars=False, load_yaml_config=False)
                image = conn.create_image('via-openstacksdk', filename=path, disk_format='raw', container_format='bare',
                                          wait=True, timeout=120, use_import=False)
                print(image.id, image.status, image.hash_value)
                """
            let result = try await spawn(await GlanceServer.venv + "/bin/python", ["-c", script, depot.url, GlanceServer.alice, file.path])
            let output = String(decoding: result.stdout, as: UTF8.self).split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(result.status == 0)
            #expect(output.count == 3)
            guard output.count == 3 else { return }
            #expect(output[1] == "active")
            #expect(output[2] == file.sha512)
            // The SDK's wait ends when the record says active, which read-your-writes shows before the push lands.
            #expect(try await depot.settledPush(output[0]).state == .done)
            try await expectGlanceHolds(glance.url, output[0], bytesOf: file.path)
            #expect(try await download("\(depot.url)/v2/images/\(output[0])/file").sha256 == file.sha256)
        }
    }

    @Test func glanceDirectImportStagesInDepotAndImportsInGlance() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let file = try TestImageFile(megabytes: 6, seed: 63)
            let created = try await glanceCLI(depot.url, token: GlanceServer.alice, [
                "image-create-via-import", "--name", "via-import", "--disk-format", "raw", "--container-format", "bare",
                "--import-method", "glance-direct", "--file", file.path,
            ])
            #expect(created.status == 0, "\(created.output)")
            let id = try #require(imageID(fromTable: created.output))
            let push = try await depot.settledPush(id)
            #expect(push.method == .glanceDirect)
            #expect(push.state == .done, "\(push.lastError ?? "")")
            try await expectGlanceHolds(glance.url, id, bytesOf: file.path)
            #expect(try await download("\(depot.url)/v2/images/\(id)/file").sha256 == file.sha256)
        }
    }

    @Test func multicloudUploadCreatesStoresPushesAndServes() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let file = try TestImageFile(megabytes: 9, seed: 64)
            let api = "\(depot.url)/api/multicloud/v1/default/RegionOne"
            let created = try await curl("\(api)/images/file", [
                "-F", "file=@\(file.path)", "-F", "name=multicloud-upload", "-F", "disk_format=raw", "-F", "container_format=bare",
                "-F", "visibility=private", "-F", "properties={\"os_distro\": \"cirros\"}",
            ])
            #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: Any])
            let id = try #require(json["id"] as? String)
            #expect(json["name"] as? String == "multicloud-upload")
            #expect(json["sha256"] as? String == file.sha256)
            #expect(json["checksum"] as? String == file.md5)
            #expect(json["os_hash_value"] as? String == file.sha512)
            #expect((json["size"] as? Int).map(UInt64.init) == file.size)
            #expect((json["push"] as? [String: Any])?["state"] as? String == "pending")

            let served = try await download("\(api)/images/file/\(id)")
            #expect(served.status == 200)
            #expect(served.sha256 == file.sha256)
            #expect(try await depot.settledPush(id).state == .done)
            try await expectGlanceHolds(glance.url, id, bytesOf: file.path)

            let metadata = try await curl("\(api)/images/\(id)")
            #expect(metadata.status == 200)
            let view = try #require(try JSONSerialization.jsonObject(with: Data(metadata.body)) as? [String: Any])
            #expect(view["status"] as? String == "active")
            #expect(view["os_distro"] as? String == "cirros")
            #expect(view["os_hash_value"] as? String == file.sha512)
            let depotView = try #require(view["depot"] as? [String: Any])
            #expect(depotView["cached"] as? Bool == true)
            #expect(depotView["sha256"] as? String == file.sha256)
            #expect((depotView["push"] as? [String: Any])?["state"] as? String == "done")
            #expect(try await curl("\(api)/images/\(id)", token: GlanceServer.bob).status == 404)
            #expect(try await curl("\(depot.url)/api/multicloud/v1/nowhere/RegionOne/images/\(id)").status == 404)
        }
    }

    @Test func aBrokenMultipartBodyKeepsNothing() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let api = "\(depot.url)/api/multicloud/v1/default/RegionOne/images/file"
            let boundary = "depot-test-boundary"
            let body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".utf8)
                + pseudoRandomBytes(count: 1 << 20, seed: 65)
            let path = depot.dir.path + "/broken-body"
            try Data(body).write(to: URL(fileURLWithPath: path))
            let broken = try await curl(api, ["-H", "Content-Type: multipart/form-data; boundary=\(boundary)", "--data-binary", "@\(path)"])
            #expect(broken.status == 400)
            #expect(errorMessage(broken).contains("closing boundary"))
            let notMultipart = try await curl(api, ["-H", "Content-Type: application/octet-stream", "--data-binary", "@\(path)"])
            #expect(notMultipart.status == 415)
            let noFile = try await curl(api, ["-F", "name=only-a-name"])
            #expect(noFile.status == 400)
            #expect(try depot.store.allDigests().isEmpty)
            #expect(try depot.catalog.pushes().isEmpty)
            #expect(depot.dir.files(under: "tmp").isEmpty)
        }
    }
}
