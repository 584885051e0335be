import DepotTestSupport
import Foundation
import Testing

/// A backend URL that is not a Glance endpoint (`--glance-url http://host:9292/v2`, an easy
/// mistake): `/readyz` says what is wrong, and Depot's errors carry Glance's text, not its HTML.
@Suite(.serialized) struct BackendURLTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func readinessNamesAVersionSuffixAsTheMistake() async throws {
        try await withDepot(glanceURL: glance.url + "/v2", clouds: ["edge_R2": glance.url]) { depot in
            let ready = try await curl("\(depot.url)/readyz", token: nil)
            #expect(ready.status == 200, "a backend problem does not make Depot unready: it serves its cache")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(ready.body)) as? [String: Any])
            let clouds = try #require(report["clouds"] as? [String: String])
            #expect(clouds["default_RegionOne"] == "not an image service: the URL \(glance.url)/v2 ends in /v2; give the endpoint without it (\(glance.url))")
            #expect(clouds["edge_R2"] == "reachable")
        }
    }

    @Test func readinessNamesAWebServerThatIsNotGlance() async throws {
        let web = try await StaticWebServer.start()
        defer { web.stop() }
        try await withDepot(glanceURL: web.url) { depot in
            let ready = try await curl("\(depot.url)/readyz", token: nil)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(ready.body)) as? [String: Any])
            let summary = try #require((report["clouds"] as? [String: String])?["default_RegionOne"])
            #expect(summary.hasPrefix("not an image service: \(web.url)/versions answered 404 with HTML"), "\(summary)")
        }
    }

    @Test func depotsErrorsCarryGlancesMessageAsText() async throws {
        try await withDepot(glanceURL: glance.url + "/v2") { depot in
            let image = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 4096, seed: 1511))
            // Glance's own answer to the path Depot asks for, as the reference text.
            let fromGlance = try await curl("\(glance.url)/v2/v2/images/\(image.id)", ["-H", "Accept: application/json"])
            let glanceJSON = try #require(try JSONSerialization.jsonObject(with: Data(fromGlance.body)) as? [String: Any])
            let glanceMessage = try #require(glanceJSON["message"] as? String)
            #expect(glanceMessage.contains("<br />"), "Glance's JSON message carries HTML: \(glanceMessage)")
            let text = glanceMessage.components(separatedBy: "<br").first!.trimmingCharacters(in: .whitespacesAndNewlines)

            for path in ["/v2/images/\(image.id)/file", "/api/multicloud/v1/default/RegionOne/images/file/\(image.id)"] {
                let answer = try await curl(depot.url + path)
                #expect(answer.status == 404, "\(path)")
                let message = errorMessage(answer)
                #expect(message.contains(text), "\(path): \(message)")
                #expect(!message.contains("<") && !message.contains(">"), "\(path): \(message)")
            }
        }
    }
}
