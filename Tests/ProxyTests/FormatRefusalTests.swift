import BlobStore
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Testing

/// Glance's upload-time refusals on every way bytes reach Depot (PUT …/file, an instant upload
/// whose body is skipped, the Multicloud upload, an image without formats), each compared with
/// the real Glance and leaving nothing behind; staged data is taken as Glance's stage takes it.
@Suite(.serialized) struct FormatRefusalTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// A qcow2 v3 header whose backing file offset is set (qemu's docs/interop/qcow2.txt).
    static func qcow2WithBackingFile(length: Int = 1 << 20) -> [UInt8] {
        var bytes = pseudoRandomBytes(count: length, seed: 160)
        bytes.replaceSubrange(0..<512, with: [UInt8](repeating: 0, count: 512))
        bytes.replaceSubrange(0..<8, with: [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])
        bytes[14] = 0x02  // backing file at offset 0x200
        bytes[23] = 16  // cluster bits
        bytes[27] = 0x40  // 1 GiB virtual
        return bytes
    }

    func write(_ bytes: [UInt8], _ dir: TemporaryDirectory, _ name: String) throws -> String {
        let path = dir.path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Glance's answer to the same upload, straight: status and its message.
    func glanceAnswer(path: String, properties: [String: JSONValue]) async throws -> (Int, String) {
        let image = try await glanceAsAlice(glance.url).createImage(properties)
        let result = try await putToReferenceGlance("\(glance.url)/v2/images/\(image.id)/file", ["-T", path, "-H", "Content-Type: application/octet-stream"])
        return (result.status, FormatDifferentialTests.glanceDetail(result.body))
    }

    @Test func refusalsOnEveryUploadPathKeepNothing() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let direct = glanceAsAlice(glance.url)
            let unsafe = try write(Self.qcow2WithBackingFile(), depot.dir, "backing.qcow2")
            let raw = pseudoRandomBytes(count: 1 << 20, seed: 161)
            let rawPath = try write(raw, depot.dir, "plain.raw")

            // PUT …/file: 415 with Glance's message, as Glance answers.
            let qcow2 = try await createImage(depot.url, diskFormat: "qcow2")
            let refused = try await curl("\(depot.url)/v2/images/\(qcow2.id)/file", ["-X", "PUT", "-T", unsafe])
            let reference = try await glanceAnswer(path: unsafe, properties: ["name": .string("ref"), "disk_format": .string("qcow2"), "container_format": .string("bare")])
            #expect(reference == (415, "Image failed safety checks"))
            #expect(refused.status == reference.0)
            #expect(errorMessage(refused).hasPrefix(reference.1))
            #expect(errorMessage(refused).contains("backing_file"))

            // The Multicloud upload refuses before it creates the image.
            let api = "\(depot.url)/api/multicloud/v1/default/RegionOne/images/file"
            let form = try await curl(api, ["-F", "name=multicloud-unsafe", "-F", "disk_format=qcow2", "-F", "container_format=bare", "-F", "file=@\(unsafe)"])
            #expect(form.status == 415)
            #expect(errorMessage(form).hasPrefix("Image failed safety checks"))
            // The fields may also follow the file: the file is committed only once they are known.
            let late = try await curl(api, ["-F", "file=@\(rawPath)", "-F", "name=multicloud-mismatch", "-F", "disk_format=vhd"])
            #expect(late.status == 415)
            #expect(errorMessage(late).hasPrefix("Image disk_format vhd does not match stream data raw"))
            #expect(try await direct.listImages().allSatisfy { !($0.name ?? "").hasPrefix("multicloud-") })

            // No disk_format: Glance's 400 before any byte is read.
            let bare = try await direct.createImage(["name": .string("no-formats")])
            let noFormats = try await curl("\(depot.url)/v2/images/\(bare.id)/file", ["-X", "PUT", "-T", rawPath])
            let glanceNoFormats = try await glanceAnswer(path: rawPath, properties: ["name": .string("no-formats-ref")])
            #expect(glanceNoFormats.0 == 400)
            #expect(noFormats.status == 400)
            #expect(errorMessage(noFormats) == glanceNoFormats.1)

            #expect(try depot.store.allDigests().isEmpty)
            #expect(try depot.catalog.pushes().isEmpty)
            #expect(depot.dir.files(under: "tmp").isEmpty)
            for id in [qcow2.id, bare.id] { #expect(try await direct.showImage(id).status == "queued") }

            // An instant upload skips the body, not the inspection: bytes Depot holds (taken as raw)
            // declared as qcow2 get Glance's 415.
            let rawImage = try await createImage(depot.url)
            #expect(try await curl("\(depot.url)/v2/images/\(rawImage.id)/file", ["-X", "PUT", "-T", rawPath]).status == 204)
            let declared = ["-H", "X-Image-Sha256: \(Digest.of(raw, algorithm: .sha256).hex)", "-H", "Expect: 100-continue"]
            let mismatched = try await createImage(depot.url, diskFormat: "qcow2")
            let instant = try await curl("\(depot.url)/v2/images/\(mismatched.id)/file", ["-X", "PUT", "-T", rawPath] + declared)
            #expect(instant.status == 415)
            #expect(errorMessage(instant).hasPrefix("Image disk_format qcow2 does not match stream data raw"))
            #expect(try depot.catalog.push(cloud: "default_RegionOne", imageID: mismatched.id) == nil)
            let again = try await createImage(depot.url)
            let taken = try await curl("\(depot.url)/v2/images/\(again.id)/file", ["-X", "PUT", "-T", rawPath] + declared)
            #expect(taken.status == 204)
            #expect(try depot.catalog.mapping(cloud: "default_RegionOne", imageID: again.id)?.virtualSize == Int64(raw.count))
            #expect(try depot.store.allDigests().count == 1)
        }
    }

    /// `PUT …/stage` takes any bytes in Glance (the import inspects them and fails): Depot
    /// answers the same and records the virtual size of what Glance's import will take.
    @Test func stagedDataIsTakenAsGlanceTakesIt() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let unsafe = try write(Self.qcow2WithBackingFile(), depot.dir, "backing.qcow2")
            let raw = try write(pseudoRandomBytes(count: 1 << 20, seed: 162), depot.dir, "plain.raw")
            let importBody = ["-X", "POST", "-H", "Content-Type: application/json", "-d", "{\"method\": {\"name\": \"glance-direct\"}}"]
            var throughDepot: [String] = []
            for (path, format) in [(raw, "raw"), (unsafe, "qcow2")] {
                var states: [String] = []
                for endpoint in [glance.url, depot.url] {
                    let image = try await createImage(endpoint, diskFormat: format)
                    let staged = try await curl("\(endpoint)/v2/images/\(image.id)/stage", ["-X", "PUT", "-T", path, "-H", "Content-Type: application/octet-stream"])
                    #expect(staged.status == 204)
                    if endpoint == depot.url {
                        throughDepot.append(image.id)
                        let recorded = try depot.catalog.mapping(cloud: "default_RegionOne", imageID: image.id)?.virtualSize
                        #expect(recorded == (format == "raw" ? 1 << 20 : nil))
                    }
                    #expect(try await curl("\(endpoint)/v2/images/\(image.id)/import", importBody).status == 202)
                    states.append(try await settledImport(image.id))
                }
                #expect(states[0] == states[1], "\(format): Glance \(states[0]), through Depot \(states[1])")
            }
            // Glance's failed import ends Depot's push at once, with the reason.
            #expect(try await depot.settledPush(throughDepot[0], timeout: .seconds(30)).state == .done)
            let failed = try await depot.settledPush(throughDepot[1], timeout: .seconds(30))
            #expect(failed.state == .failed)
            #expect(failed.lastError?.contains("import failed") == true)
        }
    }

    /// Waits until Glance's import of the image ended, taken or failed: its status, virtual
    /// size and failed stores.
    func settledImport(_ imageID: String) async throws -> String {
        let client = glanceAsAlice(glance.url)
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let image = try await client.showImage(imageID)
            let failed = image["os_glance_failed_import"]?.stringValue ?? ""
            if image.status == "active" || !failed.isEmpty || ContinuousClock.now > deadline {
                return "\(image.status ?? "?") virtual_size=\(FormatDifferentialTests.virtualSize(image).map(String.init) ?? "null") failed=\(failed)"
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }
}
