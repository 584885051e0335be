import BlobStore
import Cache
import Foundation
import Glance
import HTTPCore
import HTTPSemantics
import Logging
import NIOCore
import NIOHTTP1

/// Answers `GET|HEAD /v2/images/{id}/file`: authorize with the backend, then serve from the
/// blob (hit), from a fill in progress (miss, shared), or straight from the backend for a
/// range far ahead of the fill.
struct ImageFileResponder {
    let cache: ImageCache
    let logger: Logger
    /// Sends the request to Glance as it came and its answer back (for what only Glance can
    /// decide); nil answers from the cache's decision instead.
    var passThrough: (@Sendable () async -> Void)? = nil

    /// The most one write sends when streaming from a fill (a file region, sent with
    /// sendfile): as `HitResponse.regionBytes`, so the idle timeout sees progress.
    static let chunkSize = HitResponse.regionBytes
    /// A range starting further than this beyond the written mark is fetched on its own.
    static let aheadThreshold: UInt64 = 16 << 20

    func respond(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String) async {
        guard Self.isPlausibleImageID(imageID) else {
            await response.sendError(.notFound, "No image found with ID \(imageID); image ids are UUIDs")
            return
        }
        let authorized: AuthorizedImage
        do {
            authorized = try await cache.authorize(token: request.authToken, cloud: cloud, imageID: imageID)
        } catch {
            if case let .imageNotActive(_, status) = error, status == "deactivated", let passThrough {
                // Glance lets admins read a deactivated image and no one else, and only Glance
                // knows who is an admin: it answers, byte for byte.
                await passThrough()
                return
            }
            await sendCacheError(error, response)
            return
        }
        let image = authorized.image
        guard image.size != nil else {
            // Glance leaves an active image's size null when its store could not tell it (a
            // location whose server sent no Content-Length: `_set_image_size` in
            // glance/location.py sets only a size it got). Depot plans, fills and verifies by
            // the size, and answered such an image with an empty 200; Glance 33 fails it with
            // a 500 (its download sets Content-Length from the size). A gateway's error, in JSON.
            logger.warning("image has no size in the image service; its data cannot be served", metadata: ["image": "\(imageID)"])
            await response.sendError(
                .badGateway,
                "image \(imageID) has no size in the image service, which cannot serve its data either; its owner must create it again with its data, or an operator set its size in the image service")
            return
        }
        guard let representationRequest = RepresentationRequest(request.head) else {
            await response.sendError(.methodNotAllowed, "image data is read with GET or HEAD")
            return
        }
        let plan = ResponsePlan(representationRequest, for: Representation(image: image))
        let digest: Digest?
        do {
            digest = try await cache.resolve(authorized)
        } catch {
            logger.error("catalog lookup failed; serving from the backend", metadata: ["error": "\(error)"])
            digest = nil
        }
        if let digest, let reader = await cache.openForHit(digest, size: image.size ?? 0) {
            cache.touch(digest)
            await serveHit(request, response, plan: plan, reader: reader)
            return
        }
        if authorized.fromOfflineGrace {
            await response.sendError(.serviceUnavailable, "the image service is unreachable and image \(imageID) is not cached here; retry later")
            return
        }
        await serveMiss(request, response, authorized: authorized, plan: plan)
    }

    static func isPlausibleImageID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    // MARK: Hits

    func serveHit(_ request: Request, _ response: ResponseWriter, plan: ResponsePlan, reader: BlobReader) async {
        cache.beginRead(reader.digest)
        defer { cache.endRead(reader.digest) }
        do {
            try await response.send(HitResponse(plan: plan, version: request.head.version, reader: reader, allocator: response.allocator))
        } catch {
            response.abort()
        }
    }

    // MARK: Misses

    /// Serves the plan from a fill of the image: one backend download however many clients
    /// ask, each streaming the bytes as they land.
    func serveMiss(_ request: Request, _ response: ResponseWriter, authorized: AuthorizedImage, plan: ResponsePlan) async {
        let image = authorized.image
        let size = image.size ?? 0
        guard !plan.ranges.isEmpty else {
            // HEAD, 304, 416 or an empty image: nothing to fetch, and no fill started for it.
            await Self.sendWithoutRepresentationBytes(plan, cacheResult: "miss", to: response)
            return
        }
        let fill: Fill, shared: Bool
        do {
            (fill, shared) = try await cache.fill(authorized)
        } catch where error.isOverBudget {
            logger.info("no room in the cache budget; streaming the image from the backend without a copy", metadata: ["image": "\(image.id)", "reason": "\(error)"])
            await BackendStream(cache: cache, authorized: authorized, logger: logger).serve(plan, to: response)
            return
        } catch {
            await sendCacheError(error, response)
            return
        }
        do {
            if plan.ranges.count == 1, plan.ranges[0].lowerBound > fill.written + Self.aheadThreshold {
                // Far ahead of the fill: one backend range request for just these bytes, while
                // the fill goes on.
                try await BackendStream(cache: cache, authorized: authorized, logger: logger).serveAhead(of: fill, plan, to: response)
                return
            }
            try await response.head(HTTPResponseStatus(statusCode: plan.status), plan.httpHeaders(cacheResult: shared ? "shared" : "miss"))
            for segment in plan.body {
                switch segment {
                case let .literal(bytes):
                    try await response.body(response.allocator.buffer(bytes: bytes))
                case let .representation(range):
                    try await stream(fill, range: range, to: response, holdLastByte: range.upperBound == size - 1)
                }
            }
            try await response.end()
        } catch {
            logger.info("download through a fill ended early", metadata: ["image": "\(image.id)", "error": "\(error)"])
            response.abort()
        }
    }

    /// Sends a plan whose body holds no bytes of the representation (HEAD, 304, 416, an empty
    /// image).
    static func sendWithoutRepresentationBytes(_ plan: ResponsePlan, cacheResult: String, to response: ResponseWriter) async {
        do {
            try await response.head(HTTPResponseStatus(statusCode: plan.status), plan.httpHeaders(cacheResult: cacheResult))
            for case let .literal(bytes) in plan.body { try await response.body(response.allocator.buffer(bytes: bytes)) }
            try await response.end()
        } catch {
            response.abort()
        }
    }

    /// Streams `range` from a fill as its bytes land.
    ///
    /// With `holdLastByte` (the range ends at the image's last byte), that byte waits until the
    /// fill committed (its digests matched Glance's), so a client never receives a
    /// complete-looking wrong image; a failed fill cuts the response before it.
    ///
    /// The bytes go out as file regions of the fill's file (sendfile, as a hit's do): the
    /// kernel copies them from the page cache to each client's socket once. Read into a buffer
    /// and written, every byte was copied twice more per client, which a fill shared by tens
    /// of clients paid on the same cores as its hashes.
    func stream(_ fill: Fill, range: ClosedRange<UInt64>, to response: ResponseWriter, holdLastByte: Bool) async throws {
        let file = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: try fill.openForReading())
        defer { try? file.close() }
        var offset = range.lowerBound
        while offset <= range.upperBound {
            let (written, outcome) = await fill.waitForBytes(beyond: offset)
            if case let .failed(reason) = outcome { throw CacheError.fillFailed(imageID: fill.imageID, reason: reason) }
            guard written > offset else {
                throw CacheError.fillFailed(imageID: fill.imageID, reason: "the fill ended at \(written) bytes, before offset \(offset)")
            }
            var end = min(range.upperBound, written - 1, offset + UInt64(Self.chunkSize) - 1)
            if holdLastByte && end == range.upperBound && outcome == nil {
                if end == offset {
                    // Only the last byte is left: wait for the verdict, then loop.
                    _ = await fill.waitForBytes(beyond: written)
                    continue
                }
                end -= 1
            }
            // Below the written mark the file holds every byte (`body` refuses a region it
            // does not).
            try await response.body(FileRegion(fileHandle: file, readerIndex: Int(offset), endIndex: Int(end) + 1))
            offset = end + 1
        }
    }

    // MARK: Helpers

    /// The HTTP answer for a cache error; `headers` go with it (e.g. `connection: close` when
    /// the request's body was not read).
    func sendCacheError(_ error: CacheError, _ response: ResponseWriter, headers: HTTPHeaders = [:]) async {
        switch error {
        case let .imageNotActive(id, status) where status == "deactivated":
            await response.sendError(.forbidden, "The requested image \(id) has been deactivated. Image data download is forbidden.", headers: headers)
        case .imageNotActive:
            // Glance answers 204 No Content for an image that has no data yet.
            await response.send(.noContent, headers: headers)
        default:
            await response.sendError(error, headers: headers)
        }
    }
}
