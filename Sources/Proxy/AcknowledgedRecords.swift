import Cache
import Catalog
import Foundation
import Glance
import HTTPCore
import NIOHTTP1

/// Read-your-writes on the forwarded image API: records of images whose acknowledged bytes
/// Glance does not hold yet look as they will once the push lands (show, list with its
/// filters, sorting and paging, and what members see); requests that need Glance to hold
/// the bytes land the push first; a delete cancels what is owed.
extension DepotHandler {
    /// What a forwarded request of the image API is, for read-your-writes.
    enum ImageRequest: Equatable {
        /// `GET /v2/images/{id}`.
        case show(String)
        /// `GET /v2/images`.
        case list
        /// A request Glance answers from the image's data state: `PATCH`, an action
        /// (deactivate, reactivate), an import, a location call.
        case needsData(String)
        /// `DELETE /v2/images/{id}`.
        case delete(String)
        case other
    }

    static func imageRequest(method: HTTPMethod, pathAndQuery: String) -> ImageRequest {
        let path = Router.pathPart(Substring(pathAndQuery))
        let segments = path.split(separator: "/")
        guard segments.count >= 2, segments[0] == "v2", segments[1] == "images" else { return .other }
        guard segments.count > 2 else { return method == .GET ? .list : .other }
        let id = String(segments[2])
        switch (method, segments.count) {
        case (.GET, 3): return .show(id)
        case (.DELETE, 3): return .delete(id)
        case (.PATCH, 3): return .needsData(id)
        case (.POST, 5) where segments[3] == "actions": return .needsData(id)
        case (.POST, 4) where segments[3] == "import": return .needsData(id)
        case (_, 4...) where segments[3] == "locations": return .needsData(id)
        default: return .other
        }
    }

    /// Before a request that needs Glance to hold an image's acknowledged bytes: lands their
    /// push, within `push.action_wait`. False (answered 503 with `Retry-After`) when the wait
    /// ran out.
    func landOwedBytes(_ request: ImageRequest, cloud: String, response: ResponseWriter) async -> Bool {
        guard case let .needsData(imageID) = request, cache.owedImages(cloud: cloud)[imageID] != nil else { return true }
        switch await cache.landAcknowledgedBytes(cloud: cloud, imageID: imageID, wait: cache.settings.push.landingWait) {
        case .landed, .failed:
            // A failed push leaves Glance's own state, which Glance's answer then reflects.
            return true
        case .timedOut:
            await response.sendError(
                .serviceUnavailable,
                "image \(imageID) holds data Depot accepted that is still on its way to the image service, which must have it first; retry in a while",
                headers: ["retry-after": "30"])
            return false
        }
    }

    /// Glance's answer to a show or a list, as it will be once owed bytes land; nil when there
    /// is nothing to change (the answer is passed on as it came).
    func acknowledgedBody(
        _ request: ImageRequest, cloud: String, pathAndQuery: String, headers: [(String, String)], answer: ForwardedResponse
    ) async throws -> [UInt8]? {
        guard answer.head.status == 200 else { return nil }
        switch request {
        case .show:
            let bytes = try await Self.collect(answer.body)
            guard let image = try? JSONDecoder().decode(GlanceImage.self, from: Data(bytes)) else { return bytes }
            let shown = await cache.asAcknowledged(image, cloud: cloud)
            return shown == image ? bytes : Array(try JSONEncoder().encode(shown))
        case .list:
            let bytes = try await Self.collect(answer.body)
            let owed = cache.owedImages(cloud: cloud)
            guard !owed.isEmpty else { return bytes }
            let query = ImageListQuery(query: pathAndQuery.split(separator: "?", maxSplits: 1).dropFirst().first)
            let list = ImageListMerge(cache: cache, cloud: cloud, query: query, headers: headers, owed: Set(owed.keys))
            return try await list.page(firstAnswer: bytes)
        default:
            return nil
        }
    }

    static func collect(_ body: ImageDownload) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in body { bytes += chunk }
        return bytes
    }
}

/// One page of `GET /v2/images` with the images Depot owes Glance bytes for where they will
/// be once the pushes land.
///
/// Glance's own pages give every other image in Glance's order; the owed ones are dropped from
/// them and put back, as they will be, where the query's sort places them, if the query's
/// filters still select them. Paging stays consistent: the page holds `limit` images after
/// the marker (wherever the marker now sorts), and `next` continues after its last image.
struct ImageListMerge {
    let cache: ImageCache
    let cloud: String
    let query: ImageListQuery
    let headers: [(String, String)]
    let owed: Set<String>

    struct Page: Decodable {
        var images: [GlanceImage]
        var next: String?
    }

    func page(firstAnswer: [UInt8]) async throws -> [UInt8] {
        guard let sort = query.sort,
              var document = try JSONSerialization.jsonObject(with: Data(firstAnswer)) as? [String: Any],
              let first = try? JSONDecoder().decode(Page.self, from: Data(firstAnswer))
        else { return firstAnswer }
        let owedNow = try await owedImagesAsTheyWillBe()
        let marker = try await markerRecord(owedNow)
        if query.marker != nil, marker == nil { return firstAnswer }
        // Without a limit, Glance's configured default is its first page's length.
        let limit = query.limit ?? (first.next == nil ? Int.max : first.images.count)
        var fromGlance: [GlanceImage] = []
        var pageAnswer = first
        var exhausted = false
        let owedMarker = query.marker.map(owed.contains) == true
        if owedMarker || query.limit != nil {
            // Ask again: past an owed marker (Glance places it where it was), or for enough
            // images to fill the page once the owed ones are taken out.
            pageAnswer = try await glancePage(after: owedMarker ? nil : query.marker, size: limit)
        }
        var afterMarker = 0
        while true {
            for image in pageAnswer.images where !owed.contains(image.id) {
                // Past an owed marker: images tied with it to the second are sorted out below.
                if let marker, owedMarker, ImageListQuery.precedes(image, marker, by: sort, surely: true) { continue }
                fromGlance.append(image)
                if !owedMarker || marker.map({ ImageListQuery.precedes($0, image, by: sort, surely: true) }) == true { afterMarker += 1 }
            }
            exhausted = pageAnswer.next == nil || pageAnswer.images.isEmpty
            if exhausted || afterMarker > limit { break }
            pageAnswer = try await glancePage(after: pageAnswer.images.last?.id, size: limit)
        }
        let createdOrder = try await createdOrder(of: fromGlance + owedNow + (marker.map { [$0] } ?? []))
        func precedes(_ a: GlanceImage, _ b: GlanceImage) -> Bool { ImageListQuery.precedes(a, b, by: sort, createdOrder: createdOrder) }
        if let marker, owedMarker { fromGlance.removeAll { !precedes(marker, $0) } }
        var merged = fromGlance
        for image in owedNow where marker.map({ precedes($0, image) }) ?? true {
            let at = merged.firstIndex { precedes(image, $0) } ?? merged.endIndex
            merged.insert(image, at: at)
        }
        let shown = Array(merged.prefix(limit))
        document["images"] = try shown.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) }
        let base = query.encoded(removing: ["marker"])
        document["first"] = "/v2/images" + (base.isEmpty ? "" : "?" + base)
        if (merged.count > limit || !exhausted), let last = shown.last {
            document["next"] = "/v2/images?" + query.encoded(removing: ["marker"], setting: [("marker", last.id)])
        } else {
            document.removeValue(forKey: "next")
        }
        return Array(try JSONSerialization.data(withJSONObject: document))
    }

    /// The owed images this caller may see and the query's other filters select, as they
    /// will be: Glance filters them by id with the caller's token, Depot by the fields the
    /// pushes change.
    func owedImagesAsTheyWillBe() async throws -> [GlanceImage] {
        let ids = owed.sorted()
        var candidates: [GlanceImage] = []
        for chunk in stride(from: 0, to: ids.count, by: 100).map({ Array(ids[$0..<min($0 + 100, ids.count)]) }) {
            let path = "/v2/images?" + query.encoded(
                removing: ImageListQuery.fieldsAPushChanges.union(ImageListQuery.pagingParameters).union(["id"]),
                setting: [("id", "in:" + chunk.joined(separator: ",")), ("limit", String(chunk.count))])
            candidates += try await fetch(path).images
        }
        var shown: [GlanceImage] = []
        for image in candidates {
            let will = await cache.asAcknowledged(image, cloud: cloud)
            if query.matchesChangedFields(will) { shown.append(will) }
        }
        return shown
    }

    /// Glance's order of images whose `created_at` reads the same (Glance sorts on
    /// microseconds it does not show), asked of Glance itself for each such group.
    func createdOrder(of images: [GlanceImage]) async throws -> [String: Int] {
        var order: [String: Int] = [:]
        let groups = Dictionary(grouping: images, by: { $0["created_at"]?.stringValue ?? "" }).values.filter { Set($0.map(\.id)).count > 1 }
        for group in groups {
            let ids = Array(Set(group.map(\.id))).sorted()
            for chunk in stride(from: 0, to: ids.count, by: 80).map({ Array(ids[$0..<min($0 + 80, ids.count)]) }) {
                let path = "/v2/images?" + query.encoded(
                    removing: ImageListQuery.fieldsAPushChanges.union(ImageListQuery.pagingParameters).union(["id"]),
                    setting: [("id", "in:" + chunk.joined(separator: ",")), ("sort", "created_at:asc,id:asc"), ("limit", String(chunk.count))])
                for image in try await fetch(path).images where order[image.id] == nil { order[image.id] = order.count }
            }
        }
        return order
    }

    /// The marker's record as it sorts now (owed images as they will be); nil without a
    /// marker, or when the caller cannot see it (Glance's own answer then stands).
    func markerRecord(_ owedNow: [GlanceImage]) async throws -> GlanceImage? {
        guard let marker = query.marker else { return nil }
        if let owedImage = owedNow.first(where: { $0.id == marker }) { return owedImage }
        let answer = try await cache.client(for: cloud).forward(method: "GET", pathAndQuery: "/v2/images/\(marker)", headers: headers, body: nil)
        let bytes = try await DepotHandler.collect(answer.body)
        guard answer.head.status == 200, let image = try? JSONDecoder().decode(GlanceImage.self, from: Data(bytes)) else { return nil }
        return await cache.asAcknowledged(image, cloud: cloud)
    }

    /// A page of Glance's own list for the query, after `marker`, of `size` images plus room
    /// for the owed ones it will hold.
    func glancePage(after marker: String?, size: Int) async throws -> Page {
        // A client's limit near Int.max made this sum trap; Glance caps a page at its
        // api_limit_max anyway, so such a limit asks for no limit.
        let (sum, overflow) = size.addingReportingOverflow(owed.count + 1)
        let pageSize = size == Int.max || overflow ? nil : sum
        var extra: [(String, String)] = []
        if let pageSize { extra.append(("limit", String(pageSize))) }
        if let marker { extra.append(("marker", marker)) }
        return try await fetch("/v2/images?" + query.encoded(removing: ["limit", "marker"], setting: extra))
    }

    func fetch(_ pathAndQuery: String) async throws -> Page {
        let answer = try await cache.client(for: cloud).forward(method: "GET", pathAndQuery: pathAndQuery, headers: headers, body: nil)
        let bytes = try await DepotHandler.collect(answer.body)
        guard answer.head.status == 200 else { throw ImageListError.backend(status: answer.head.status) }
        return try JSONDecoder().decode(Page.self, from: Data(bytes))
    }
}

enum ImageListError: Error {
    case backend(status: Int)
}
