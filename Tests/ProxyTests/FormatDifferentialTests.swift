import BlobStore
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Testing

/// Every file of the format corpus (`scripts/format-corpus`), uploaded with each plausible
/// `disk_format` straight to a real Glance 33 and through Depot in write-back mode: the same
/// synchronous answer (status and Glance's message), and for what is taken the same
/// `virtual_size`: the one Depot records at once, and Glance's own once Depot's push landed.
@Suite(.serialized) struct FormatDifferentialTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    struct Case {
        let file: String
        let path: String
        let diskFormat: String
        var containerFormat = "bare"
    }

    /// What one upload got: status, message (Glance's detail line, or Depot's JSON message).
    struct Answer {
        var status: Int
        var message: String
        var virtualSize: Int64?
    }

    /// The corpus with the disk formats its manifest lists, plus uploads Glance does not
    /// inspect (other containers) and kernels/ramdisks with MBR trouble.
    static func cases(_ dir: TemporaryDirectory) async throws -> [Case] {
        _ = try await run("/bin/bash", [repositoryRoot + "/scripts/format-corpus", dir.path + "/corpus"])
        let manifest = try String(contentsOfFile: dir.path + "/corpus/MANIFEST", encoding: .utf8)
        var cases: [Case] = []
        for line in manifest.split(separator: "\n") {
            let fields = line.split(separator: "\t").map(String.init)
            for format in fields[1].split(separator: ",") {
                cases.append(Case(file: fields[0], path: dir.path + "/corpus/" + fields[0], diskFormat: String(format)))
            }
        }
        for (file, container) in [("qcow2-backing.qcow2", "ovf"), ("vmdk-flat-hostfile.vmdk", "ova"), ("raw.img", "docker")] {
            cases.append(Case(file: file, path: dir.path + "/corpus/" + file, diskFormat: file.hasPrefix("raw") ? "raw" : String(file.split(separator: ".").last!), containerFormat: container))
        }
        return cases
    }

    /// Glance's error pages are HTML: its message is the last line of text.
    static func glanceDetail(_ body: [UInt8]) -> String {
        let text = String(decoding: body, as: UTF8.self).replacingOccurrences(of: "<[^>]*>", with: "\n", options: .regularExpression)
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty } ?? ""
    }

    static func virtualSize(_ image: GlanceImage) -> Int64? {
        image["virtual_size"]?.uint64Value.map { Int64($0) }
    }

    func create(_ endpoint: String, _ c: Case) async throws -> GlanceImage {
        try await GlanceClient(configuration: .init(endpoint: endpoint, credentials: .token(GlanceServer.alice))).createImage([
            "name": .string("format-\(c.file)"), "disk_format": .string(c.diskFormat), "container_format": .string(c.containerFormat),
        ])
    }

    func put(_ endpoint: String, imageID: String, path: String) async throws -> CurlResult {
        let url = "\(endpoint)/v2/images/\(imageID)/file", upload = ["-T", path, "-H", "Content-Type: application/octet-stream"]
        return endpoint == glance.url ? try await putToReferenceGlance(url, upload) : try await curl(url, ["-X", "PUT"] + upload)
    }

    @Test func everyCorpusFileGetsGlancesAnswerThroughDepot() async throws {
        let dir = TemporaryDirectory("format-differential")
        let cases = try await Self.cases(dir)
        try await withDepot(glanceURL: glance.url) { depot in
            let direct = glanceAsAlice(glance.url)
            var rows: [(Case, Answer, Answer, pushed: String)] = []
            var accepted: [(index: Int, imageID: String)] = []
            for c in cases {
                let straight = try await create(glance.url, c)
                let glanceResult = try await put(glance.url, imageID: straight.id, path: c.path)
                var glanceAnswer = Answer(status: glanceResult.status, message: Self.glanceDetail(glanceResult.body))
                if glanceResult.status == 204 { glanceAnswer.virtualSize = Self.virtualSize(try await direct.showImage(straight.id)) }

                let blobsBefore = try depot.store.allDigests().count
                let through = try await create(depot.url, c)
                let depotResult = try await put(depot.url, imageID: through.id, path: c.path)
                var depotAnswer = Answer(status: depotResult.status, message: depotResult.status == 204 ? "" : errorMessage(depotResult))
                if depotResult.status == 204 {
                    depotAnswer.virtualSize = try depot.catalog.mapping(cloud: "default_RegionOne", imageID: through.id)?.virtualSize
                    accepted.append((rows.count, through.id))
                } else {
                    // A refusal keeps nothing: no blob, no push, no temporary file; Glance untouched.
                    #expect(try depot.store.allDigests().count == blobsBefore, "\(c.file) as \(c.diskFormat): a blob was kept")
                    #expect(try depot.catalog.push(cloud: "default_RegionOne", imageID: through.id) == nil)
                    #expect(depot.dir.files(under: "tmp").isEmpty)
                    #expect(try await direct.showImage(through.id).status == "queued")
                }
                rows.append((c, glanceAnswer, depotAnswer, "-"))
                try await direct.deleteImage(straight.id)
            }
            // Glance's own virtual size for the images Depot pushed.
            for (index, imageID) in accepted {
                let push = try await depot.settledPush(imageID)
                let pushed = try await direct.showImage(imageID)
                rows[index].pushed = push.state == .done ? (Self.virtualSize(pushed).map(String.init) ?? "null") : "push \(push.state.rawValue): \(push.lastError ?? "")"
            }

            print(Self.table(rows))
            for (c, glanceAnswer, depotAnswer, pushed) in rows {
                let label = "\(c.file) as \(c.diskFormat)/\(c.containerFormat)"
                #expect(depotAnswer.status == glanceAnswer.status, "\(label): Glance \(glanceAnswer.status) \(glanceAnswer.message), Depot \(depotAnswer.status) \(depotAnswer.message)")
                if glanceAnswer.status != 204 {
                    #expect(Self.sameGist(glance: glanceAnswer.message, depot: depotAnswer.message), "\(label): Glance said \(glanceAnswer.message), Depot \(depotAnswer.message)")
                } else if depotAnswer.status == 204 {
                    #expect(depotAnswer.virtualSize == glanceAnswer.virtualSize, "\(label): virtual size recorded by Depot")
                    #expect(pushed == (glanceAnswer.virtualSize.map(String.init) ?? "null"), "\(label): virtual size after Depot's push")
                }
            }
            #expect(rows.contains { $0.1.status == 415 } && rows.contains { $0.1.status == 204 })
        }
    }

    /// Depot's message starts with Glance's; Glance lists several detected formats in the
    /// order of a Python set, so that list is compared as a set.
    static func sameGist(glance: String, depot: String) -> Bool {
        let multiple = "Multiple formats detected: "
        guard glance.hasPrefix(multiple), depot.hasPrefix(multiple) else { return depot.hasPrefix(glance) }
        func formats(_ text: String) -> Set<Substring> {
            Set(text.dropFirst(multiple.count).prefix { $0 != ";" }.split(separator: ","))
        }
        return formats(glance) == formats(depot)
    }

    static func table(_ rows: [(Case, Answer, Answer, pushed: String)]) -> String {
        func answer(_ a: Answer) -> String {
            a.status == 204 ? "204 vsize=\(a.virtualSize.map(String.init) ?? "null")" : "\(a.status) \(a.message.prefix(60))"
        }
        var lines = ["| file | disk_format | container | Glance 33 | Depot (write-back) | Glance after Depot's push |", "|---|---|---|---|---|---|"]
        for (c, g, d, pushed) in rows {
            lines.append("| \(c.file) | \(c.diskFormat) | \(c.containerFormat) | \(answer(g)) | \(answer(d)) | \(pushed) |")
        }
        return lines.joined(separator: "\n")
    }
}
