import HTTPCore
/// Where each request goes: Depot's whole URL space in one value, built from the clouds' names.
///
/// Glance v2 at `/v2/…` (the default cloud) and `/clouds/{owner}_{region}/v2/…`, version
/// discovery, health, metrics, Depot's admin API at `/depot/v1/…`, Glance's cache API at
/// `/v2/cache…`, and the Multicloud (`/api/multicloud/v1/…`) and ONAP VIO
/// (`/api/multicloud-vio/v0/…`) APIs. Pure: the same URI always routes the same way.
struct Router: Sendable, Equatable {
    /// The cloud of `/v2/…` without a `/clouds/` prefix.
    let defaultCloud: String
    /// Every configured cloud's name (`{owner}_{region}`).
    let clouds: Set<String>

    init(defaultCloud: String, clouds: some Sequence<String>) {
        self.defaultCloud = defaultCloud
        self.clouds = Set(clouds)
    }

    /// Where a request goes.
    enum Route: Equatable {
        case versions(cloud: String, prefix: String)
        case imageFile(cloud: String, imageID: String, pathAndQuery: String)
        case imageStage(cloud: String, imageID: String, pathAndQuery: String)
        case imageImport(cloud: String, imageID: String, pathAndQuery: String)
        case forward(cloud: String, pathAndQuery: String)
        case multicloud(Multicloud)
        case multicloudVIO(MulticloudVIO)
        case admin(AdminResponder.Route)
        case metrics
        case health
        case readiness
        /// 404 with this message; `closesConnection` where the client may already be sending
        /// a body that will not be read.
        case notFound(String, closesConnection: Bool = false)
        case invalid(String)

        /// The route's name for metrics (bounded: no ids).
        var label: String {
            switch self {
            case .versions: "versions"
            case .imageFile: "image_file"
            case .imageStage: "image_stage"
            case .imageImport: "image_import"
            case .forward: "forward"
            case .multicloud: "multicloud"
            case .multicloudVIO: "multicloud_vio"
            case .admin: "admin"
            case .metrics: "metrics"
            case .health: "health"
            case .readiness: "readiness"
            case .notFound: "not_found"
            case .invalid: "invalid"
            }
        }
    }

    /// The seed's Multicloud API under `/api/multicloud/v1/{cloud_owner}/{cloud_region}/`.
    enum Multicloud: Equatable {
        case upload(cloud: String)
        case file(cloud: String, imageID: String)
        case metadata(cloud: String, imageID: String)
    }

    /// ONAP's VIO plugin API under `/api/multicloud-vio/v0/{vimid}/{tenantid}/`.
    enum MulticloudVIO: Equatable {
        case upload(cloud: String, tenant: String)
        case file(cloud: String, tenant: String, imageID: String)
    }

    static let multicloudPrefix = "/api/multicloud/v1/"
    static let multicloudVIOPrefix = "/api/multicloud-vio/v0/"

    /// The path of a request target: up to the first "?". Split on scalars, not Characters:
    /// "?" or "/" followed by a combining mark or ZWJ is one Character, which a Character
    /// split would not split at (libcurl and Glance do), e.g. "/v2/images/../\u{301}x".
    /// Searched as UTF-8 bytes: "?" and "/" are one byte each and never part of another
    /// scalar, so a byte split is the scalar split, at a fraction of the cost on every hit.
    static func pathPart(_ uri: Substring) -> Substring {
        // Over the contiguous bytes where there are some: the view's own search costs about
        // 30 instructions a byte, and every hit's access-log line asks.
        let offset = uri.utf8.withContiguousStorageIfAvailable { $0.firstIndex(of: UInt8(ascii: "?")) }
            ?? uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri.utf8.distance(from: uri.utf8.startIndex, to: $0) }
        guard let offset else { return uri }
        let mark = uri.utf8.index(uri.utf8.startIndex, offsetBy: offset)
        return Substring(uri.unicodeScalars[..<mark])
    }

    /// A path's segments, split at every "/" scalar (see `pathPart`).
    static func segments(_ path: Substring, omittingEmpty: Bool = false) -> [Substring] {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: omittingEmpty).map {
            Substring(path.unicodeScalars[$0.startIndex..<$0.endIndex])
        }
    }

    /// `path` with each `%` and two hex digits replaced by the byte they name, as the WSGI
    /// server in front of Glance makes `PATH_INFO` (gunicorn's `unquote_to_wsgi_str`, Python's
    /// `unquote`): a `%` not followed by two hex digits stays as it is. Bytes that are not
    /// UTF-8 become U+FFFD; no image id or route has any.
    static func percentDecoded(_ path: Substring) -> Substring {
        guard path.utf8.contains(UInt8(ascii: "%")) else { return path }
        func hex(_ byte: UInt8) -> UInt8? { Character(Unicode.Scalar(byte)).hexDigitValue.map(UInt8.init) }
        let bytes = Array(path.utf8)
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let high = hex(bytes[i + 1]), let low = hex(bytes[i + 2]) {
                decoded.append(high << 4 | low)
                i += 3
            } else {
                decoded.append(bytes[i])
                i += 1
            }
        }
        return Substring(String(decoding: decoded, as: UTF8.self))
    }

    /// Whether a path has a "." or ".." segment. Compared as bytes: no other string is
    /// canonically equivalent to "." or "..", so this is the Character comparison, without
    /// an array of segments on every request.
    static func hasDotSegment(_ path: Substring) -> Bool {
        var dots = 0
        var onlyDots = true
        for byte in path.utf8 {
            if byte == UInt8(ascii: "/") {
                if onlyDots && (dots == 1 || dots == 2) { return true }
                dots = 0
                onlyDots = true
            } else if byte == UInt8(ascii: ".") {
                dots += 1
            } else {
                onlyDots = false
            }
        }
        return onlyDots && (dots == 1 || dots == 2)
    }

    private var cloudList: String { clouds.sorted().joined(separator: ", ") }

    func route(uri fullURI: String) -> Route {
        if let route = imageFileAtOnce(fullURI) { return route }
        return routeInFull(uri: fullURI)
    }

    /// `/v2/images/{id}/file` of the default cloud with an id of letters, digits and `-` (no
    /// query, no dot segment can hide in it): what `routeInFull` answers, from one pass over
    /// the bytes instead of splitting the path, for the request every hit is; nil otherwise.
    func imageFileAtOnce(_ uri: String) -> Route? {
        var bytes = uri
        return bytes.withUTF8 { bytes -> Route? in
            let prefix = Self.imageFilePrefix, suffix = Self.imageFileSuffix
            guard bytes.count > prefix.count + suffix.count,
                  bytes.starts(with: prefix), bytes[(bytes.count - suffix.count)...].elementsEqual(suffix)
            else { return nil }
            let id = bytes[prefix.count..<(bytes.count - suffix.count)]
            guard id.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D }) else { return nil }
            return .imageFile(cloud: defaultCloud, imageID: String(decoding: UnsafeBufferPointer(rebasing: id), as: UTF8.self), pathAndQuery: uri)
        }
    }

    private static let imageFilePrefix = Array("/v2/images/".utf8)
    private static let imageFileSuffix = Array("/file".utf8)

    /// Every route, by the full rules.
    func routeInFull(uri fullURI: String) -> Route {
        var uri = Substring(fullURI)
        let rawPath = Self.pathPart(uri)
        // Dot segments would be resolved differently on the way to Glance (libcurl squashes
        // them): refuse them rather than guess which resource was meant.
        if Self.hasDotSegment(rawPath) {
            return .invalid("the path \(rawPath.prefix(200)) has . or .. segments; send the resource's path itself")
        }
        if uri.hasPrefix("/depot/v1/") || uri == "/depot/v1" {
            return .admin(.depot(rest: Self.segments(rawPath.dropFirst("/depot/v1".count), omittingEmpty: true).map(String.init)))
        }
        if uri == "/metrics" { return .metrics }
        if uri.hasPrefix(Self.multicloudVIOPrefix) { return multicloudVIO(path: rawPath) }
        if uri.hasPrefix(Self.multicloudPrefix) { return multicloud(path: rawPath) }
        var cloud = defaultCloud
        var prefix = ""
        if uri.hasPrefix("/clouds/") {
            let rest = uri.dropFirst("/clouds/".count)
            let name = rest.prefix { $0 != "/" && $0 != "?" }
            guard !name.isEmpty, clouds.contains(String(name)) else {
                return .notFound("no cloud \(name) here; clouds are named OWNER_REGION, one of: \(cloudList)")
            }
            cloud = String(name)
            prefix = "/clouds/\(name)"
            uri = rest.dropFirst(name.count)
            if uri.isEmpty { uri = "/" }
        }
        // Glance routes on the path with its percent-encodings decoded (WSGI's PATH_INFO), so
        // `/v2/images/%32%30…/file` and `…/%66ile` are the image's file there as well.
        let spelled = Self.pathPart(uri)
        let path = Self.percentDecoded(spelled)
        if path != spelled, Self.hasDotSegment(path) {
            return .invalid("the path \(path.prefix(200)) has . or .. segments once decoded; send the resource's path itself")
        }
        if path == "/" || path == "/versions" || path == "/v2" || path == "/v2/" {
            return path.hasPrefix("/v2") ? .forward(cloud: cloud, pathAndQuery: String(uri)) : .versions(cloud: cloud, prefix: prefix)
        }
        // Depot's own endpoints, as spelled (no Glance route to mirror).
        if prefix.isEmpty && spelled == "/healthz" { return .health }
        if prefix.isEmpty && spelled == "/readyz" { return .readiness }
        guard path.hasPrefix("/v2/") else { return .notFound("no route for \(path); Depot serves the Glance v2 API under /v2/") }
        return glance(path: path, pathAndQuery: String(uri), cloud: cloud)
    }

    /// A Glance v2 path of one cloud.
    private func glance(path: Substring, pathAndQuery: String, cloud: String) -> Route {
        let segments = Self.segments(path)
        if segments.count >= 3, segments[2] == "cache" {
            let rest = segments.dropFirst(3)
            // Glance's router has no route with an empty segment ("/v2/cache/" is 404 there).
            guard !rest.contains(where: \.isEmpty) else {
                return .notFound("no route for \(path); the cache API is /v2/cache, /v2/cache/{image_id}, /v2/cache/nodes/{image_id}, /v2/cache/prune and /v2/cache/clean")
            }
            return .admin(.glanceCache(cloud: cloud, rest: rest.map(String.init)))
        }
        // ["", "v2", "images", ID, "file"]
        if segments.count == 5, segments[2] == "images" {
            let imageID = String(segments[3])
            switch segments[4] {
            case "file": return .imageFile(cloud: cloud, imageID: imageID, pathAndQuery: pathAndQuery)
            case "stage": return .imageStage(cloud: cloud, imageID: imageID, pathAndQuery: pathAndQuery)
            case "import": return .imageImport(cloud: cloud, imageID: imageID, pathAndQuery: pathAndQuery)
            default: break
            }
        }
        return .forward(cloud: cloud, pathAndQuery: pathAndQuery)
    }

    /// `/api/multicloud/v1/{cloud_owner}/{cloud_region}/images/file[/{id}]` and `…/images/{id}`.
    private func multicloud(path: Substring) -> Route {
        let segments = Self.segments(path.dropFirst(Self.multicloudPrefix.count)).map(String.init)
        guard segments.count >= 3, !segments[0].isEmpty, !segments[1].isEmpty, segments[2] == "images" else {
            return .notFound("no route for \(path); the Multicloud API has images/file, images/file/{id} and images/{id}")
        }
        let cloud = "\(segments[0])_\(segments[1])"
        let route: Multicloud
        switch segments.count {
        case 4 where segments[3] == "file": route = .upload(cloud: cloud)
        case 5 where segments[3] == "file" && ImageFileResponder.isPlausibleImageID(segments[4]):
            route = .file(cloud: cloud, imageID: segments[4])
        // An empty id would ask Glance for /v2/images/, its image list.
        case 4 where ImageFileResponder.isPlausibleImageID(segments[3]): route = .metadata(cloud: cloud, imageID: segments[3])
        default: return .notFound("no route for \(path); the Multicloud API has images/file, images/file/{id} and images/{id}")
        }
        guard clouds.contains(cloud) else {
            return .notFound("no cloud \(cloud) here; clouds are named by cloud_owner/cloud_region, one of: \(cloudList)", closesConnection: true)
        }
        return .multicloud(route)
    }

    /// `/api/multicloud-vio/v0/{vimid}/{tenantid}/images/file[/{imageid}]`.
    private func multicloudVIO(path: Substring) -> Route {
        let segments = Self.segments(path.dropFirst(Self.multicloudVIOPrefix.count)).map(String.init)
        let notFound = Route.notFound("no route for \(path); the ONAP Multicloud API has {vimid}/{tenantid}/images/file and images/file/{id}")
        guard segments.count >= 4, !segments[0].isEmpty, !segments[1].isEmpty, segments[2] == "images", segments[3] == "file" else { return notFound }
        let route: MulticloudVIO
        switch segments.count {
        case 4: route = .upload(cloud: segments[0], tenant: segments[1])
        case 5 where ImageFileResponder.isPlausibleImageID(segments[4]): route = .file(cloud: segments[0], tenant: segments[1], imageID: segments[4])
        default: return notFound
        }
        guard clouds.contains(segments[0]) else {
            return .notFound("no VIM \(segments[0]) here; a vimid is {cloud_owner}_{cloud_region_id}, one of: \(cloudList)", closesConnection: true)
        }
        return .multicloudVIO(route)
    }
}
