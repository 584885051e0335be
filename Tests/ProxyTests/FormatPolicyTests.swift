import Catalog
import DepotTestSupport
import Foundation
import Glance
import Testing

/// Glance's `[image_format]` switches, set the same on a real Glance 33 and in `depot serve`'s
/// config file: every upload gets the same answer and virtual size both ways.
@Suite(.serialized) struct FormatPolicyTests {
    @Test func relaxedSwitchesGiveGlancesAnswers() async throws {
        let glance = try await GlanceServer.start(
            configuration: "\n[image_format]\nrequire_image_format_match = false\ngpt_safety_checks_nonfatal = mbr\n")
        defer { glance.stop() }
        let dir = TemporaryDirectory("format-policy")
        _ = try await run("/bin/bash", [repositoryRoot + "/scripts/format-corpus", dir.path + "/corpus"])
        let config = dir.path + "/depot.yaml"
        try "image_format:\n  require_image_format_match: false\n  gpt_safety_checks_nonfatal: mbr\n".write(toFile: config, atomically: true, encoding: .utf8)
        let depot = try await DepotProcess.start([
            "--config", config, "--data-dir", dir.path + "/data", "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
        ])
        defer { depot.stopBlocking() }
        let cases = [
            ("raw.img", "qcow2"), ("trunc-vhd.vhd", "vhd"), ("gpt-extra-partition.img", "raw"), ("mbr-empty.img", "raw"),
            ("iso-gpt.iso", "raw"), ("iso-and-qcow2.img", "qcow2"), ("vmdk-sparse-hostfile.vmdk", "vmdk"), ("qcow2-backing.qcow2", "qcow2"),
            ("qed.qed", "raw"), ("gpt-bad-bootflag.img", "aki"),
        ]
        let direct = glanceAsAlice(glance.url)
        var rows: [String] = []
        for (file, diskFormat) in cases {
            var answers: [(Int, String, Int64?)] = []
            for endpoint in [glance.url, depot.url] {
                let image = try await createImage(endpoint, diskFormat: diskFormat)
                let url = "\(endpoint)/v2/images/\(image.id)/file", upload = ["-T", dir.path + "/corpus/" + file, "-H", "Content-Type: application/octet-stream"]
                let result = endpoint == glance.url ? try await putToReferenceGlance(url, upload) : try await curl(url, ["-X", "PUT"] + upload)
                var virtualSize: Int64?
                if result.status == 204 {
                    virtualSize = endpoint == glance.url
                        ? FormatDifferentialTests.virtualSize(try await direct.showImage(image.id))
                        : try Catalog(path: dir.path + "/data/catalog.sqlite").mapping(cloud: "default_RegionOne", imageID: image.id)?.virtualSize
                }
                let message = result.status == 204 ? "" : endpoint == glance.url ? FormatDifferentialTests.glanceDetail(result.body) : errorMessage(result)
                answers.append((result.status, message, virtualSize))
            }
            rows.append("| \(file) | \(diskFormat) | \(answers[0].0) \(answers[0].1) vsize=\(answers[0].2.map(String.init) ?? "null") | \(answers[1].0) \(answers[1].1.prefix(40)) vsize=\(answers[1].2.map(String.init) ?? "null") |")
            #expect(answers[0].0 == answers[1].0, "\(file) as \(diskFormat): Glance \(answers[0]), Depot \(answers[1])")
            #expect(FormatDifferentialTests.sameGist(glance: answers[0].1, depot: answers[1].1), "\(file) as \(diskFormat)")
            #expect(answers[0].2 == answers[1].2, "\(file) as \(diskFormat): virtual size")
        }
        print((["| file | disk_format | Glance 33 (relaxed) | Depot (relaxed) |", "|---|---|---|---|"] + rows).joined(separator: "\n"))
    }
}
