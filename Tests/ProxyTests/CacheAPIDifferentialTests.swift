import DepotTestSupport
import Foundation
import Glance
import Testing

/// Every `/v2/cache…` call, the same to a Glance 33 with its image cache on and to Depot in
/// front of a Glance without one: statuses, `Allow`, body shapes and error messages equal,
/// Glance being the reference.
@Suite(.serialized) struct CacheAPIDifferentialTests {
    /// Glance's admin by its policy (`role:admin`), as fakeauth makes it.
    static let glanceAdmin = "admin:admin:admin"
    static let missing = "0d1ee5e6-52c6-4a5e-9b3a-3b4d1a5b0f00"

    /// A caller: the token sent to Glance and the one sent to Depot (Depot's own admin token
    /// must act as Glance's admin does).
    struct Caller: Sendable {
        let name: String
        let glance: String?
        let depot: String?
    }

    /// One request of the matrix.
    struct Call: Sendable {
        let name: String
        let method: String
        let path: @Sendable (String) -> String
        var headers: [String] = []
        var takesImage = false
    }

    static let callers = [
        Caller(name: "none", glance: nil, depot: nil),
        Caller(name: "other project", glance: GlanceServer.bob, depot: GlanceServer.bob),
        Caller(name: "reader", glance: GlanceServer.carol, depot: GlanceServer.carol),
        Caller(name: "member (owner)", glance: GlanceServer.alice, depot: GlanceServer.alice),
        Caller(name: "admin", glance: glanceAdmin, depot: glanceAdmin),
        Caller(name: "Depot admin_token", glance: glanceAdmin, depot: DepotHarness.adminToken),
    ]

    static let calls = [
        Call(name: "list", method: "GET", path: { _ in "/v2/cache" }),
        Call(name: "queue", method: "PUT", path: { "/v2/cache/\($0)" }, takesImage: true),
        Call(name: "nodes", method: "GET", path: { "/v2/cache/nodes/\($0)" }, takesImage: true),
        Call(name: "delete", method: "DELETE", path: { "/v2/cache/\($0)" }, takesImage: true),
        Call(name: "clear", method: "DELETE", path: { _ in "/v2/cache" }),
        Call(name: "clear target=cache", method: "DELETE", path: { _ in "/v2/cache" }, headers: ["x-image-cache-clear-target: cache"]),
        Call(name: "clear target=queue", method: "DELETE", path: { _ in "/v2/cache" }, headers: ["x-image-cache-clear-target: queue"]),
        Call(name: "clear target=both", method: "DELETE", path: { _ in "/v2/cache" }, headers: ["x-image-cache-clear-target: both"]),
        Call(name: "prune", method: "POST", path: { _ in "/v2/cache/prune" }),
        Call(name: "clean", method: "POST", path: { _ in "/v2/cache/clean" }),
        Call(name: "POST /v2/cache", method: "POST", path: { _ in "/v2/cache" }),
        Call(name: "GET /v2/cache/{id}", method: "GET", path: { "/v2/cache/\($0)" }, takesImage: true),
    ]

    /// The same five images on one Glance: active, queued (no data), deactivated, deleted, and
    /// one that never existed.
    static func images(on glance: GlanceServer) async throws -> [(state: String, id: String)] {
        let alice = glanceAsAlice(glance.url)
        let active = try await uploadImage(alice, pseudoRandomBytes(count: 1 << 20, seed: 1501))
        let queued = try await alice.createImage(["name": .string("queued"), "disk_format": .string("raw"), "container_format": .string("bare")])
        let deactivated = try await uploadImage(alice, pseudoRandomBytes(count: 1 << 20, seed: 1502))
        #expect(try await curl("\(glance.url)/v2/images/\(deactivated.id)/actions/deactivate", ["-X", "POST"]).status == 204)
        let deleted = try await uploadImage(alice, pseudoRandomBytes(count: 1 << 20, seed: 1503))
        try await alice.deleteImage(deleted.id)
        return [("active", active.id), ("queued", queued.id), ("deactivated", deactivated.id), ("deleted", deleted.id), ("missing", missing)]
    }

    @Test func everyCacheCallAnswersAsGlanceWithItsCacheOn() async throws {
        let reference = try await GlanceServer.shared(imageCache: true)
        let backend = try await GlanceServer.shared()
        try await withDepot(glanceURL: backend.url) { depot in
            let glanceImages = try await Self.images(on: reference)
            let depotImages = try await Self.images(on: backend)

            // Both caches hold the active image first, so lists have entries to compare.
            #expect(try await curl("\(reference.url)/v2/cache/\(glanceImages[0].id)", token: Self.glanceAdmin, ["-X", "PUT"]).status == 202)
            #expect(try await curl("\(depot.url)/v2/cache/\(depotImages[0].id)", token: Self.glanceAdmin, ["-X", "PUT"]).status == 202)
            // Glance lists a queued image under `queued_images` before its worker has cached it,
            // so only `cached_images` says the copy is there.
            try await waitUntil("Glance cached the active image") {
                let list = try await curl("\(reference.url)/v2/cache", token: Self.glanceAdmin)
                return Self.cachedImageIDs(list).contains(glanceImages[0].id)
            }
            try await waitUntil("Depot cached the active image") { try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: depotImages[0].id) != nil }
            for url in [reference.url, depot.url] {
                let list = try await curl(url + "/v2/cache", token: Self.glanceAdmin)
                #expect(Self.cachedImageIDs(list).count == 1, "the lists compared have an entry: \(url)")
            }

            var table: [String] = []
            var differences: [String] = []
            for caller in Self.callers {
                for call in Self.calls {
                    let states = call.takesImage ? Array(zip(glanceImages, depotImages)) : [(("-", ""), ("-", ""))]
                    for (glanceImage, depotImage) in states {
                        let extra = ["-X", call.method, "-H", "Accept: application/json"] + call.headers.flatMap { ["-H", $0] }
                        let fromGlance = try await curl(reference.url + call.path(glanceImage.id), token: caller.glance, extra)
                        let fromDepot = try await curl(depot.url + call.path(depotImage.id), token: caller.depot, extra)
                        let difference = Self.difference(glance: fromGlance, depot: fromDepot, ids: (glanceImage.id, depotImage.id))
                        let cell = "\(call.name) | \(caller.name) | \(glanceImage.state) | \(fromGlance.status) | \(fromDepot.status)"
                        table.append(cell + (difference == nil ? " | equal" : " | DIFFERENT: \(difference!)"))
                        if let difference { differences.append("\(cell): \(difference)") }
                    }
                }
            }
            print("call | token | image | Glance | Depot | verdict\n" + table.joined(separator: "\n"))
            print("\(table.count) cells, \(differences.count) different")
            #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        }
    }

    /// The `image_id`s of a `GET /v2/cache` answer's `cached_images` (empty when it has none).
    static func cachedImageIDs(_ list: CurlResult) -> [String] {
        let document = try? JSONSerialization.jsonObject(with: Data(list.body)) as? [String: Any]
        let cached = document?["cached_images"] as? [[String: Any]] ?? []
        return cached.compactMap { $0["image_id"] as? String }
    }

    /// What differs between Glance's answer and Depot's, or nil.
    ///
    /// - Parameter ids: the image's id on Glance and on Depot's backend (messages name it).
    static func difference(glance: CurlResult, depot: CurlResult, ids: (glance: String, depot: String)) -> String? {
        if glance.status != depot.status { return "status \(glance.status) vs \(depot.status)" }
        if glance.status == 405, glance.header("allow") != depot.header("allow") {
            return "Allow \(glance.header("allow") ?? "-") vs \(depot.header("allow") ?? "-")"
        }
        if glance.status >= 400 {
            // Glance's webob message (HTML cut off) must be in Depot's JSON error, as text.
            let glanceJSON = try? JSONSerialization.jsonObject(with: Data(glance.body)) as? [String: Any]
            var glanceText = (glanceJSON?["message"] as? String ?? String(decoding: glance.body, as: UTF8.self))
                .components(separatedBy: "<br").first!.trimmingCharacters(in: .whitespacesAndNewlines)
            if !ids.glance.isEmpty { glanceText = glanceText.replacingOccurrences(of: ids.glance, with: ids.depot) }
            let firstSentence = glanceText.components(separatedBy: ". ").first!
            let message = errorMessage(depot)
            if message.contains("<") { return "Depot's message has HTML: \(message)" }
            if !message.contains(firstSentence) { return "Glance says \"\(glanceText)\", Depot \"\(message)\"" }
            return nil
        }
        if glance.body.isEmpty || depot.body.isEmpty {
            return glance.body.count == depot.body.count ? nil : "body of \(glance.body.count) vs \(depot.body.count) bytes"
        }
        guard let a = try? JSONSerialization.jsonObject(with: Data(glance.body)),
              let b = try? JSONSerialization.jsonObject(with: Data(depot.body))
        else { return "a body that is not JSON" }
        return shapeDifference(a, b, at: "$")
    }

    /// Where two JSON documents differ in shape (keys, kinds), or nil. Glance's `checksum` of
    /// a cached image is always null in Glance 33 (`insert_cache_details` is never given one):
    /// null matches any value.
    static func shapeDifference(_ a: Any, _ b: Any, at path: String) -> String? {
        switch (a, b) {
        case (is NSNull, _), (_, is NSNull): return nil
        case let (x as [String: Any], y as [String: Any]):
            guard Set(x.keys) == Set(y.keys) else { return "\(path): keys \(x.keys.sorted()) vs \(y.keys.sorted())" }
            for key in x.keys.sorted() {
                if let difference = shapeDifference(x[key]!, y[key]!, at: "\(path).\(key)") { return difference }
            }
            return nil
        case let (x as [Any], y as [Any]):
            // Depot's cache holds other images than Glance's: compare each element with the
            // other side's first.
            for element in x { if let first = y.first, let d = shapeDifference(element, first, at: "\(path)[]") { return d } }
            for element in y { if let first = x.first, let d = shapeDifference(first, element, at: "\(path)[]") { return d } }
            return nil
        case (is String, is String), (is NSNumber, is NSNumber): return nil
        default: return "\(path): \(type(of: a)) vs \(type(of: b))"
        }
    }
}
