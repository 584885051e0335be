import BlobStore
import Cache
import DepotTestSupport
import Foundation
import Glance
import Testing

/// Depot must answer `GET /v2/images/{id}/file` exactly as Glance does for the same token:
/// every visibility and membership state, every kind of token, uncached and cached.
@Suite(.serialized) struct DifferentialAuthorizationTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    static let tokens: [(name: String, token: String?)] = [
        ("owner", GlanceServer.alice),
        ("other project", GlanceServer.bob),
        ("member accepted", "carol:projC:member,reader"),
        ("member pending", "dave:projD:member,reader"),
        ("member rejected", "erin:projE:member,reader"),
        ("admin", GlanceServer.admin),
        ("reader only", "alice:projA:reader"),
        ("invalid", "not a token"),
        ("none", nil),
    ]

    /// An image of Alice's with `visibility`; shared ones get projC (accepted), projD (pending)
    /// and projE (rejected) as members.
    func makeImage(_ visibility: String, seed: UInt64) async throws -> GlanceImage {
        let admin = GlanceClient(configuration: .init(endpoint: glance.url, credentials: .token(GlanceServer.admin)))
        // Publicizing needs an admin; the owner stays projA.
        let image = try await admin.createImage([
            "name": .string("authz-\(visibility)"), "disk_format": .string("raw"), "container_format": .string("bare"),
            "visibility": .string(visibility), "owner": .string("projA"),
        ])
        try await admin.uploadImageData(image.id, from: .bytes(pseudoRandomBytes(count: 64 << 10, seed: seed)))
        if visibility == "shared" {
            for (project, status) in [("projC", "accepted"), ("projD", "pending"), ("projE", "rejected")] {
                #expect(try await rawStatus("POST", "/v2/images/\(image.id)/members", token: GlanceServer.alice, body: "{\"member\": \"\(project)\"}") == 200)
                if status != "pending" {
                    let token = Self.tokens.first { $0.token?.contains(":\(project):") == true }!.token!
                    #expect(try await rawStatus("PUT", "/v2/images/\(image.id)/members/\(project)", token: token, body: "{\"status\": \"\(status)\"}") == 200)
                }
            }
        }
        return image
    }

    /// The status of a request straight to Glance.
    func rawStatus(_ method: String, _ path: String, token: String?, body: String? = nil) async throws -> Int {
        var extra = ["-X", method]
        if let body { extra += ["-H", "Content-Type: application/json", "--data", body] }
        return try await curl(glance.url + path, token: token, extra).status
    }

    /// Compares Depot with Glance for every image and token; returns the differences.
    func differences(_ depot: DepotHarness, _ images: [(String, GlanceImage)], pass: String) async throws -> [String] {
        var found: [String] = []
        for (visibility, image) in images {
            for (name, token) in Self.tokens {
                let path = "/v2/images/\(image.id)/file"
                let direct = try await curl(glance.url + path, token: token).status
                let viaDepot = try await curl(depot.url + path, token: token).status
                if direct != viaDepot { found.append("\(pass) \(visibility) image, \(name) token: Glance \(direct), Depot \(viaDepot)") }
            }
        }
        return found
    }

    @Test func depotAnswersAsGlanceForEveryVisibilityAndToken() async throws {
        var images: [(String, GlanceImage)] = []
        for (n, visibility) in ["private", "shared", "public", "community"].enumerated() {
            images.append((visibility, try await makeImage(visibility, seed: UInt64(500 + n))))
        }
        var settings = CacheSettings.testing
        settings.decisionTTL = .zero   // every request asks Glance: the strict comparison
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in

            var found = try await differences(depot, images, pass: "uncached")
            // Cache every image (the owner may read them all), then compare again.
            for (_, image) in images { #expect(try await download("\(depot.url)/v2/images/\(image.id)/file").status == 200) }
            for (_, image) in images { #expect(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id) != nil) }
            found += try await differences(depot, images, pass: "cached")

            // Membership removed, image deactivated, image deleted: Glance decides again.
            let shared = images[1].1
            #expect(try await rawStatus("DELETE", "/v2/images/\(shared.id)/members/projC", token: GlanceServer.alice) == 204)
            #expect(try await rawStatus("POST", "/v2/images/\(images[2].1.id)/actions/deactivate", token: GlanceServer.admin) == 204)
            #expect(try await rawStatus("DELETE", "/v2/images/\(images[3].1.id)", token: GlanceServer.alice) == 204)
            found += try await differences(depot, images, pass: "after changes")
            let cells = images.count * Self.tokens.count * 3
            #expect(found.isEmpty, "\(found.count) of \(cells) cells differ:\n\(found.joined(separator: "\n"))")
            print("differential authorization: \(cells) cells compared, \(found.count) differences")
        }
    }
}
