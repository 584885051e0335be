import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import PropertyBased
import Testing

@testable import Glance
@testable import Proxy

/// Property-based fuzzing of `Router.route(uri:)`, the pure function every request (and the
/// event-loop fast path) is routed by, built from a few clouds' names.
///
/// Filesystem: the blob store is addressed by digests only (`BlobStore.path(for: Digest)` is
/// its one path-making API; image ids and cloud names go to the Catalog as SQL parameters and
/// to Glance through `pathComponent`), so the property checks that every URL-derived value
/// that reaches the store is a validated digest.
///
/// On swift-property-based: a failing URI is shrunk and reported with its seed; to replay it,
/// add the `.fixedSeed("…")` the issue names to the `@Test` (see
/// `Sources/DepotTestSupport/FuzzGenerators.swift`).
@Suite struct RouterFuzzTests {
    static let inputs = 50_000
    static let clouds = ["default_RegionOne", "att_Region-East", "vz_R2", "a.b_c_d"]

    /// The shortcut every hit takes agrees with the full rules where it answers, and answers
    /// the plain image-file path; anything else (a query, another cloud, a dot) takes the full rules.
    @Test(arguments: [
        ("/v2/images/0b2f6c1e-7d3a-4c55-9e21-5f0d8a6b9c10/file", true), ("/v2/images/ABC-def-123/file", true),
        ("/v2/images/x/file?a=b", false), ("/v2/images/../file", false), ("/v2/images/./file", false), ("/v2/images//file", false),
        ("/v2/images/a.b/file", false), ("/v2/images/a%2Fb/file", false), ("/clouds/vz_R2/v2/images/abc/file", false),
        ("/v2/images/abc/files", false), ("/v2/images/a/b/file", false),
    ])
    func theImageFileShortcutAgreesWithTheFullRules(uri: String, shortcut: Bool) {
        let router = Router(defaultCloud: "default_RegionOne", clouds: Self.clouds)
        let fast = router.imageFileAtOnce(uri)
        #expect((fast != nil) == shortcut)
        if let fast { #expect(fast == router.routeInFull(uri: uri)) }
        #expect(router.route(uri: uri) == router.routeInFull(uri: uri))
    }

    @Test func routesAreWellFormed() async throws {
        let dir = TemporaryDirectory("depot-router-fuzz")
        let store = try BlobStore(dataDirectory: dir.path)
        let handler = Router(defaultCloud: "default_RegionOne", clouds: Self.clouds)
        let input = Generator(run: { RouterGenerator.fuzzedURI(&$0) }, shrink: { FuzzShrink.removals($0) })
        await propertyCheck(count: Self.inputs, input: input) { uri in
            if let failure = RouterCheck.failure(uri, handler: handler, store: store) { Issue.record("\(fuzzQuote(uri)): \(failure)") }
        }
        withExtendedLifetime(dir) {}
    }
}

enum RouterCheck {
    static let clouds = Set(RouterFuzzTests.clouds)

    /// A value taken from the URL is one path segment: no `/`, not a dot segment; a `?` only
    /// from a decoded `%3F` (Glance routes on the decoded path), encoded again towards Glance.
    /// A "/" or "?" fused with a following combining mark or ZWJ into one Character is not
    /// split on by the router (it splits Characters); such values pass here, not fail
    /// (see the report: downstream checks refuse them).
    static func segmentProblem(_ value: String, _ what: String) -> String? {
        if value.contains(where: { $0 == "/" }) { return "\(what) \(fuzzQuote(value)) contains /" }
        if value == "." || value == ".." { return "\(what) is the dot segment \(value)" }
        // What reaches Glance from it (an id in /v2/images/{id}): one clean segment, any NUL,
        // control character, "/", "?", "#" or "%" percent-encoded.
        let encoded = pathComponent(value)
        if !encoded.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) || encoded.contains(where: { "/?#".contains($0) }) || encoded == "." || encoded == ".." {
            return "\(what) \(fuzzQuote(value)) goes to Glance as \(fuzzQuote(encoded))"
        }
        return nil
    }

    /// The request path without the query, and whether it has a `.` or `..` segment, on
    /// bytes: what libcurl normalizes when it forwards the request.
    static func pathAndDots(_ uri: String) -> (path: Substring, dots: Bool) {
        let path = beforeQuery(uri)
        let bytes = uri.utf8.prefix { $0 != UInt8(ascii: "?") }
        let dots = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).contains { $0.elementsEqual(".".utf8) || $0.elementsEqual("..".utf8) }
        return (path, dots)
    }

    /// Up to the first "?" byte (a "?" fused with a following mark into one Character too).
    static func beforeQuery(_ text: String) -> Substring { Substring(text.unicodeScalars.prefix { $0 != "?" }) }

    /// `uri` with `/clouds/{cloud}` removed when it starts so; nil when it should but does not.
    static func unprefixed(_ uri: String, cloud: String) -> String? {
        if uri.hasPrefix("/clouds/") {
            guard uri.hasPrefix("/clouds/\(cloud)") else { return nil }
            let rest = String(uri.dropFirst("/clouds/\(cloud)".count))
            return rest.isEmpty ? "/" : rest
        }
        return cloud == "default_RegionOne" ? uri : nil
    }

    static func failure(_ uri: String, handler: Router, store: BlobStore) -> String? {
        let route = handler.route(uri: uri)
        if let shortcut = handler.imageFileAtOnce(uri) {
            let full = handler.routeInFull(uri: uri)
            if shortcut != full { return "the image-file shortcut routed to \(shortcut), the full rules to \(full)" }
        }
        let (path, dots) = pathAndDots(uri)
        // Glance's routes are taken on the decoded path, where `%2E%2E` is a dot segment too.
        let decodedDots = Router.hasDotSegment(Router.percentDecoded(path))
        if case .invalid = route {
            return dots || decodedDots ? nil : "refused as invalid without a dot segment"
        }
        if dots { return "a path with a dot segment was routed to \(route)" }
        return routeProblem(route, uri: uri, path: path, store: store) ?? queryProblem(route, uri: uri, handler: handler)
    }

    static func routeProblem(_ route: Router.Route, uri: String, path: Substring, store: BlobStore) -> String? {
        switch route {
        case let .imageFile(cloud, imageID, pathAndQuery), let .imageStage(cloud, imageID, pathAndQuery), let .imageImport(cloud, imageID, pathAndQuery):
            return imageProblem(route, cloud: cloud, imageID: imageID, pathAndQuery: pathAndQuery, uri: uri)
        case let .forward(cloud, pathAndQuery):
            guard clouds.contains(cloud) else { return "forwarded to unknown cloud \(cloud)" }
            guard unprefixed(uri, cloud: cloud) == pathAndQuery else { return "forward: \(fuzzQuote(pathAndQuery)) is not the URI without its cloud prefix" }
            // Glance decodes the path before it routes it.
            guard Router.percentDecoded(beforeQuery(pathAndQuery)).hasPrefix("/v2") else { return "forwarded a path outside /v2: \(fuzzQuote(pathAndQuery))" }
        case let .versions(cloud, prefix):
            guard clouds.contains(cloud) else { return "versions of unknown cloud \(cloud)" }
            guard prefix.isEmpty ? cloud == "default_RegionOne" : prefix == "/clouds/\(cloud)" else { return "versions prefix \(prefix) for \(cloud)" }
        case let .admin(.glanceCache(cloud, rest)):
            guard clouds.contains(cloud) else { return "cache API of unknown cloud \(cloud)" }
            for segment in rest {
                if segment.isEmpty { return "an empty cache API segment" }
                if let problem = segmentProblem(segment, "cache API segment") { return problem }
            }
        case let .admin(.depot(rest)):
            return depotAdminProblem(rest, path: path, store: store)
        case let .multicloud(route):
            return multicloudProblem(route, path: path)
        case let .multicloudVIO(route):
            return multicloudVIOProblem(route, path: path)
        case .metrics:
            if uri != "/metrics" { return "metrics for \(uri)" }
        case .health, .readiness:
            if path != "/healthz" && path != "/readyz" { return "\(route) for \(path)" }
        case .notFound, .invalid:
            break
        }
        return nil
    }

    /// A route to an image's data, stage or import: one clean id, forwarded unchanged.
    static func imageProblem(_ route: Router.Route, cloud: String, imageID: String, pathAndQuery: String, uri: String) -> String? {
        if let problem = segmentProblem(imageID, "image id") { return problem }
        guard clouds.contains(cloud) else { return "routed to unknown cloud \(cloud)" }
        // Forwarded unchanged: the cloud prefix removed, nothing else.
        guard unprefixed(uri, cloud: cloud) == pathAndQuery else { return "\(route): pathAndQuery is not the URI without its cloud prefix" }
        let action: String = switch route {
        case .imageFile: "file"
        case .imageStage: "stage"
        default: "import"
        }
        let ownPath = Router.percentDecoded(beforeQuery(pathAndQuery))
        guard ownPath == "/v2/images/\(imageID)/\(action)" else { return "\(route) for path \(ownPath)" }
        // What Glance is asked for: still one segment there.
        let glancePath = "/v2/images/\(pathComponent(imageID))/\(action)"
        let segments = glancePath.split(separator: "/", omittingEmptySubsequences: false)
        if segments.count != 5 || segments[3] == "." || segments[3] == ".." || glancePath.contains("?") || glancePath.contains("#") {
            return "image id \(fuzzQuote(imageID)) becomes the Glance path \(fuzzQuote(glancePath))"
        }
        if ImageFileResponder.isPlausibleImageID(imageID) {
            if !imageID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) || imageID.isEmpty || imageID.utf8.count > 64 {
                return "image id \(fuzzQuote(imageID)) passed isPlausibleImageID"
            }
        }
        return nil
    }

    static func depotAdminProblem(_ rest: [String], path: Substring, store: BlobStore) -> String? {
        guard path.hasPrefix("/depot/v1") else { return "admin route for \(path)" }
        for segment in rest {
            if segment.isEmpty { return "an empty admin segment" }
            if let problem = segmentProblem(segment, "admin segment") { return problem }
        }
        // The only admin input that reaches the blob store: a digest, validated.
        if rest.count >= 2, rest[0] == "blobs" {
            if let digest = try? Digest.sha256(hex: rest[1]) {
                let hex = digest.hex
                guard hex.count == 64, hex.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }), hex == rest[1].lowercased() else {
                    return "digest \(fuzzQuote(rest[1])) became \(hex)"
                }
                let file = store.path(for: digest)
                let relative = file.dropFirst(store.root.count)
                guard file.hasPrefix(store.root + "/blobs/"), !relative.split(separator: "/").contains(".."),
                      relative == "/blobs/sha256/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
                else { return "digest \(hex) maps to the file \(file)" }
            }
        }
        return nil
    }

    static func multicloudProblem(_ route: Router.Multicloud, path: Substring) -> String? {
        guard path.hasPrefix(Router.multicloudPrefix) else { return "multicloud route for \(path)" }
        // Split at every "/" scalar, as libcurl and Glance would.
        let names = path.dropFirst(Router.multicloudPrefix.count).unicodeScalars
            .split(separator: "/", omittingEmptySubsequences: false).map(Substring.init)
        let expectedCloud = names.count >= 2 ? "\(names[0])_\(names[1])" : "?"
        switch route {
        case let .upload(cloud):
            guard clouds.contains(cloud) else { return "multicloud route to unknown cloud \(cloud)" }
            if cloud != expectedCloud { return "multicloud cloud \(cloud), path names \(expectedCloud)" }
        case let .file(cloud, imageID), let .metadata(cloud, imageID):
            guard clouds.contains(cloud) else { return "multicloud route to unknown cloud \(cloud)" }
            if cloud != expectedCloud { return "multicloud cloud \(cloud), path names \(expectedCloud)" }
            // An empty id would ask Glance for /v2/images/, its image list.
            if !ImageFileResponder.isPlausibleImageID(imageID) { return "multicloud image id \(fuzzQuote(imageID)) is routed" }
            if let problem = segmentProblem(imageID, "multicloud image id") { return problem }
        }
        if names.count < 2 || names[0].isEmpty || names[1].isEmpty { return "multicloud route without owner and region" }
        return nil
    }

    static func multicloudVIOProblem(_ route: Router.MulticloudVIO, path: Substring) -> String? {
        guard path.hasPrefix(Router.multicloudVIOPrefix) else { return "ONAP route for \(path)" }
        let names = path.dropFirst(Router.multicloudVIOPrefix.count).unicodeScalars
            .split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard names.count >= 4, !names[0].isEmpty, !names[1].isEmpty else { return "ONAP route without vimid and tenant" }
        switch route {
        case let .upload(cloud, tenant):
            guard clouds.contains(cloud) else { return "ONAP route to unknown VIM \(cloud)" }
            if (cloud, tenant) != (names[0], names[1]) { return "ONAP route to \(cloud)/\(tenant), path names \(names[0])/\(names[1])" }
        case let .file(cloud, tenant, imageID):
            if (cloud, tenant) != (names[0], names[1]) { return "ONAP route to \(cloud)/\(tenant), path names \(names[0])/\(names[1])" }
            if let problem = segmentProblem(imageID, "ONAP image id") { return problem }
        }
        return nil
    }

    /// A query string never changes which resource is meant.
    static func queryProblem(_ route: Router.Route, uri: String, handler: Router) -> String? {
        if !uri.unicodeScalars.contains("?"), !uri.unicodeScalars.contains("#") {
            let withQuery = handler.route(uri: uri + "?x=/../y&z=%2F")
            switch (route, withQuery) {
            case let (.imageFile(c1, i1, p1), .imageFile(c2, i2, p2)), let (.imageStage(c1, i1, p1), .imageStage(c2, i2, p2)),
                 let (.imageImport(c1, i1, p1), .imageImport(c2, i2, p2)):
                if c1 != c2 || i1 != i2 || p1 + "?x=/../y&z=%2F" != p2 { return "a query string changed \(route) into \(withQuery)" }
            case let (.forward(c1, p1), .forward(c2, p2)):
                if c1 != c2 || p1 + "?x=/../y&z=%2F" != p2 { return "a query string changed \(route) into \(withQuery)" }
            case let (.admin(.glanceCache(c1, r1)), .admin(.glanceCache(c2, r2))):
                if c1 != c2 || r1 != r2 { return "a query string changed \(route) into \(withQuery)" }
            case (.imageFile, _), (.imageStage, _), (.imageImport, _), (.admin(.glanceCache), _):
                return "a query string changed \(route) into \(withQuery)"
            case let (.admin(.depot(r1)), .admin(.depot(r2))) where r1 != r2:
                return "a query string changed \(route) into \(withQuery)"
            default: break
            }
        }
        return nil
    }
}

enum RouterGenerator {
    static let interesting: [[UInt8]] = ["/", "//", "/./", "/../", "..", "%2e", "%2F", "?", "#", "%00", "/v2/images/", "/clouds/", "/file", "\u{0}"].map { Array($0.utf8) }

    static func uuid(_ rng: inout some RandomNumberGenerator) -> String {
        let hex = Array("0123456789abcdef")
        let groups = [8, 4, 4, 4, 12].map { count in String((0..<count).map { _ in rng.pick(hex) }) }
        let text = groups.joined(separator: "-")
        return rng.chance(0.1) ? text.uppercased() : text
    }

    static func imageID(_ rng: inout some RandomNumberGenerator) -> String {
        switch rng.below(30) {
        case 0..<12: return uuid(&rng)
        case 12: return uuid(&rng).replacingOccurrences(of: "-", with: "")
        case 13: return ""
        case 14: return rng.pick([".", "..", "...", ".hidden", "a..b"])
        case 15: return rng.pick(["%2e%2e", "%2E%2E", "%2e.", ".%2e", "%2F", "a%2Fb", "%00", "%"])
        case 16: return rng.pick(["a/b", "a/../b", "./x"])
        case 17: return rng.pick(["é", "日本", "🚀", "\u{0}", "a\u{0}b", "a b", "\t", "\u{7F}"])
        case 18: return rng.pick(["a?b", "a#b", "?", "#"])
        case 19: return String(repeating: rng.pick(["a", "-", "0"]), count: rng.int(60...300))
        case 20: return rng.pick(["file", "stage", "import", "images", "v2", "clouds", "cache"])
        default:
            let alphabet = Array("abcdefXYZ0123456789-_.~!$&'()*+,;=:@%")
            return String((0..<rng.int(1...40)).map { _ in rng.pick(alphabet) })
        }
    }

    static func cloudSegment(_ rng: inout some RandomNumberGenerator) -> String {
        rng.weighted([
            (12, rng.pick(RouterFuzzTests.clouds)), (1, "unknown_cloud"), (1, ""), (1, "default"), (1, "DEFAULT_RegionOne"),
            (1, "default%5FRegionOne"), (1, "default_RegionOne%20"), (1, ".."), (1, "."), (1, "vz_R2?x"), (1, "att_Region-East#x"),
        ])
    }

    static func hex(_ rng: inout some RandomNumberGenerator) -> String {
        let digits = Array("0123456789abcdef")
        switch rng.below(8) {
        case 0..<4: return String((0..<64).map { _ in rng.pick(digits) })
        case 4: return String((0..<64).map { _ in rng.pick(digits) }).uppercased()
        case 5: return String((0..<rng.pick([63, 65, 128, 0])).map { _ in rng.pick(digits) })
        case 6: return rng.pick(["../../../etc/passwd", "%2e%2e%2f", "g" + String(repeating: "0", count: 63), "..", "sha256:" + String(repeating: "a", count: 64)])
        default: return String(repeating: "a", count: 62) + rng.pick(["..", "/x", "%2", "\u{0}\u{0}"])
        }
    }

    static func tail(_ rng: inout some RandomNumberGenerator) -> String {
        let id = imageID(&rng)
        let owner = rng.pick(["att", "vz", "default", "", "a_b", "é"]), region = rng.pick(["Region-East", "R2", "RegionOne", ""])
        return rng.weighted([
            (10, "/v2/images/\(id)/file"), (3, "/v2/images/\(id)/stage"), (3, "/v2/images/\(id)/import"), (3, "/v2/images/\(id)"),
            (2, "/v2/images"), (1, "/v2/images/\(id)/actions/deactivate"), (1, "/v2/images/\(id)/tags/x"), (1, "/v2/images/\(id)/file/extra"),
            (2, "/v2/cache"), (2, "/v2/cache/\(id)"), (1, "/v2/cache/nodes/\(id)"), (1, "/v2/cache/prune"), (1, "/v2/cache//\(id)//"),
            (1, "/v2"), (1, "/v2/"), (1, "/"), (1, ""), (1, "/versions"), (1, "/healthz"), (1, "/readyz"), (1, "/metrics"),
            (1, "/depot/v1"), (1, "/depot/v1/"), (1, "/depot/v1/stats"), (3, "/depot/v1/blobs/\(hex(&rng))"), (2, "/depot/v1/blobs/\(hex(&rng))/pin"),
            (1, "/depot/v1/images/\(cloudSegment(&rng))/\(id)/pin"), (1, "/depot/v1/pushes/\(cloudSegment(&rng))/\(id)/retry"),
            (2, "/api/multicloud/v1/\(owner)/\(region)/images/file"), (2, "/api/multicloud/v1/\(owner)/\(region)/images/file/\(id)"),
            (2, "/api/multicloud/v1/\(owner)/\(region)/images/\(id)"), (1, "/api/multicloud/v1/\(owner)/\(region)/images/"),
            (1, "/v1/images"), (1, "/V2/images/\(id)/file"), (1, "*"), (1, "http://host/v2/images/\(id)/file"), (1, "/v2images/\(id)/file"),
        ])
    }

    /// A URI from the grammar, a quarter of them mutated.
    static func fuzzedURI(_ rng: inout some RandomNumberGenerator) -> String {
        let uri = uri(&rng)
        return rng.chance(0.25) ? mutate(uri, rng: &rng, rounds: rng.int(1...3), interesting: interesting) : uri
    }

    static func uri(_ rng: inout some RandomNumberGenerator) -> String {
        var text = (rng.chance(0.3) ? "/clouds/" + cloudSegment(&rng) : "") + tail(&rng)
        for _ in 0..<rng.smallCount(max: 3) {
            switch rng.below(10) {
            case 8:  // a combining mark or ZWJ right after a "/" or "?" (one Character with it)
                let separators = text.indices.filter { text[$0] == "/" || text[$0] == "?" }
                if let at = separators.randomElement(using: &rng) {
                    text.insert(contentsOf: rng.pick(["\u{200D}", "\u{301}", "\u{FE0F}"]), at: text.index(after: at))
                }
            case 0:  // double a slash
                if let slash = text.indices.filter({ text[$0] == "/" }).randomElement(using: &rng) { text.insert("/", at: slash) }
            case 1:  // a dot segment somewhere
                let slashes = text.indices.filter { text[$0] == "/" }
                if let slash = slashes.randomElement(using: &rng) { text.insert(contentsOf: rng.pick(["/.", "/..", "/./", "/../"]), at: slash) }
            case 2: text += rng.pick(["/", "/.", "/..", "//"])
            case 3:  // percent-encode one character
                if !text.isEmpty {
                    let at = text.index(text.startIndex, offsetBy: rng.below(text.count))
                    let encoded = text[at].utf8.map { String(format: "%%%02X", $0) }.joined()
                    text.replaceSubrange(at...at, with: encoded)
                }
            case 4: text += rng.pick(["?a=b", "?", "??", "?x=/../y", "?name=%2F..%2F", "?a=b#frag"])
            case 5: text += "#" + rng.pick(["", "x", "/../"])
            case 6: text = text.uppercased()
            case 7: text = rng.pick([" ", "\t", ""]) + text
            default: text += rng.pick(["%00", "\u{0}", "%", "%zz", ";param"])
            }
        }
        return text
    }
}
