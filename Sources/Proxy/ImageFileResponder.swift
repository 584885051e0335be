import BlobStore
import Cache
import Foundation
import Glance
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

    /// Bytes per read when streaming from a fill.
    static let chunkSize = 1 << 20
    /// A range starting further than this beyond the written mark is fetched on its own.
    static let aheadThreshold: UInt64 = 16 << 20

    func respond(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String) async {
        guard Self.isPlausibleImageID(imageID) else {
            await response.sendError(.notFound, "No image found with ID \(imageID); image ids are UUIDs")
            return
        }
        let authorized: AuthorizedImage
        do {
            authorized = try await cache.authorize(token: request.headers.first(name: "x-auth-token"), cloud: cloud, imageID: imageID)
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
        let digest: Digest?
        do {
            digest = try cache.resolve(authorized)
        } catch {
            logger.error("catalog lookup failed; serving from the backend", metadata: ["error": "\(error)"])
            digest = nil
        }
        if let digest, let reader = try? cache.store.open(digest) {
            cache.touch(digest)
            await serveHit(request, response, image: image, reader: reader)
            return
        }
        if authorized.fromOfflineGrace {
            await response.sendError(.serviceUnavailable, "the image service is unreachable and image \(imageID) is not cached here; retry later")
            return
        }
        await serveMiss(request, response, authorized: authorized)
    }

    static func isPlausibleImageID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    // MARK: Hits

    func serveHit(_ request: Request, _ response: ResponseWriter, image: GlanceImage, reader: BlobReader) async {
        cache.beginRead(reader.digest)
        defer { cache.endRead(reader.digest) }
        do {
            try await response.send(try HitResponse(head: request.head, image: image, reader: reader, allocator: response.allocator))
        } catch {
            response.abort()
        }
    }

    // MARK: Misses

    func serveMiss(_ request: Request, _ response: ResponseWriter, authorized: AuthorizedImage) async {
        let image = authorized.image
        let size = image.size ?? 0
        var ranges = RangeRequest.parse(request.headers.first(name: "range"), size: size)
        // No entity tag is known before the bytes are: a conditional range gets the whole body.
        if request.headers.first(name: "if-range") != nil { ranges = .whole }
        if case .unsatisfiable = ranges {
            var headers = Self.baseHeaders(image: image, cacheResult: "miss")
            headers.add(name: "content-range", value: "bytes */\(size)")
            await response.sendError(.rangeNotSatisfiable, "the requested range is not satisfiable for an image of \(size) bytes", headers: headers)
            return
        }
        if request.method == .HEAD {
            // HEAD never starts a fill: it learns the headers without costing a download.
            var headers = Self.baseHeaders(image: image, cacheResult: "miss")
            headers.add(name: "content-length", value: String(size))
            await response.send(.ok, headers: headers)
            return
        }
        let fill: Fill, shared: Bool
        do {
            (fill, shared) = try cache.fill(authorized)
        } catch where error.isOverBudget {
            logger.info("no room in the cache budget; streaming the image from the backend without a copy", metadata: ["image": "\(image.id)", "reason": "\(error)"])
            await serveBypass(response, authorized: authorized, ranges: ranges)
            return
        } catch {
            await sendCacheError(error, response)
            return
        }
        var headers = Self.baseHeaders(image: image, cacheResult: shared ? "shared" : "miss")
        do {
            switch ranges {
            case .unsatisfiable:
                return
            case .whole:
                headers.add(name: "content-length", value: String(size))
                try await response.head(.ok, headers)
                if size > 0 { try await stream(fill, range: 0...(size - 1), to: response, verifyBeforeLastByte: true) }
                try await response.end()
            case let .ranges(list) where list.count == 1:
                let range = list[0]
                headers.add(name: "content-length", value: String(range.count))
                headers.add(name: "content-range", value: "bytes \(range.lowerBound)-\(range.upperBound)/\(size)")
                if range.lowerBound > fill.written + Self.aheadThreshold {
                    // Far ahead of the fill: one backend range request for just these bytes,
                    // while the fill goes on.
                    headers.replaceOrAdd(name: "x-depot-cache", value: "miss")
                    let download = try await cache.backendRange(cloud: authorized.cloud, imageID: image.id, range: range)
                    try await response.head(.partialContent, headers)
                    for try await chunk in download { try await response.body(response.allocator.buffer(bytes: chunk)) }
                } else {
                    try await response.head(.partialContent, headers)
                    try await stream(fill, range: range, to: response, verifyBeforeLastByte: false)
                }
                try await response.end()
            case let .ranges(list):
                try await Self.sendMultipart(list, size: size, headers: headers, to: response) { range in
                    try await stream(fill, range: range, to: response, verifyBeforeLastByte: false)
                }
                try await response.end()
            }
        } catch {
            logger.info("download through a fill ended early", metadata: ["image": "\(image.id)", "error": "\(error)"])
            response.abort()
        }
    }

    /// Answers from the backend, byte ranges as asked, keeping nothing (`x-depot-cache: bypass`).
    ///
    /// The whole image is checked against Glance's hash like a fill: its last byte goes out only
    /// once the hash matched, so wrong bytes never look complete.
    func serveBypass(_ response: ResponseWriter, authorized: AuthorizedImage, ranges: RangeRequest) async {
        let image = authorized.image
        let size = image.size ?? 0
        var headers = Self.baseHeaders(image: image, cacheResult: "bypass")
        func open(_ range: ClosedRange<UInt64>) async throws -> ImageDownload {
            try await cache.backendRange(cloud: authorized.cloud, imageID: image.id, range: range)
        }
        func relay(_ download: ImageDownload) async throws {
            for try await chunk in download { try await response.body(response.allocator.buffer(bytes: chunk)) }
        }
        func relayVerified(_ download: ImageDownload) async throws {
            let expected = ImageCache.provingDigest(of: image)
            let hasher = expected.map { DigestHasher($0.algorithm) }
            var sent: UInt64 = 0
            for try await chunk in download where !chunk.isEmpty {
                guard sent + UInt64(chunk.count) <= size else { throw BypassError.tooLong(expected: size) }
                chunk.withUnsafeBytes { hasher?.update($0) }
                sent += UInt64(chunk.count)
                if sent < size {
                    try await response.body(response.allocator.buffer(bytes: chunk))
                    continue
                }
                // The last chunk: all of it but its last byte, then that byte once the hash is right.
                if chunk.count > 1 { try await response.body(response.allocator.buffer(bytes: chunk.dropLast())) }
                if let expected, let actual = hasher?.finish(), actual != expected {
                    throw BypassError.mismatch(expected: expected, actual: actual)
                }
                try await response.body(response.allocator.buffer(bytes: chunk.suffix(1)))
            }
            guard sent == size else { throw BypassError.tooShort(expected: size, received: sent) }
        }
        do {
            // The backend's answer is awaited before the head, so a refusal is still an error
            // answer rather than a broken transfer.
            switch ranges {
            case .unsatisfiable:
                return
            case .whole:
                let download = size > 0 ? try await open(0...(size - 1)) : nil
                headers.add(name: "content-length", value: String(size))
                try await response.head(.ok, headers)
                if let download { try await relayVerified(download) }
            case let .ranges(list) where list.count == 1:
                let download = try await open(list[0])
                headers.add(name: "content-length", value: String(list[0].count))
                headers.add(name: "content-range", value: "bytes \(list[0].lowerBound)-\(list[0].upperBound)/\(size)")
                try await response.head(.partialContent, headers)
                try await relay(download)
            case let .ranges(list):
                try await Self.sendMultipart(list, size: size, headers: headers, to: response) { range in
                    try await relay(try await open(range))
                }
            }
            try await response.end()
        } catch {
            // Wrong bytes from the backend are worth an operator's look; a client gone is not.
            logger.log(level: error is BypassError ? .error : .info, "download from the backend without a copy ended early",
                       metadata: ["image": "\(image.id)", "error": "\(error)"])
            if response.headSent { response.abort() } else { await sendCacheError(.fillFailed(imageID: image.id, reason: "\(error)"), response) }
        }
    }

    /// Sends `list` as one multipart/byteranges answer; `writePart` writes each part's bytes.
    static func sendMultipart(
        _ list: [ClosedRange<UInt64>], size: UInt64, headers: HTTPHeaders, to response: ResponseWriter,
        writePart: (ClosedRange<UInt64>) async throws -> Void
    ) async throws {
        let multipart = Multipart(ranges: list, size: size)
        var headers = headers
        headers.replaceOrAdd(name: "content-type", value: multipart.contentType)
        headers.add(name: "content-length", value: String(multipart.contentLength))
        try await response.head(.partialContent, headers)
        for (index, range) in list.enumerated() {
            try await response.body(response.allocator.buffer(string: multipart.partHeader(index)))
            try await writePart(range)
        }
        try await response.body(response.allocator.buffer(string: multipart.closing))
    }

    /// Streams `range` from a fill as its bytes land.
    ///
    /// With `verifyBeforeLastByte`, the last byte waits until the fill committed (its digests
    /// matched Glance's), so a client never receives a complete-looking wrong image.
    func stream(_ fill: Fill, range: ClosedRange<UInt64>, to response: ResponseWriter, verifyBeforeLastByte: Bool) async throws {
        let fd = try fill.openForReading()
        defer { close(fd) }
        var offset = range.lowerBound
        while offset <= range.upperBound {
            let (written, outcome) = await fill.waitForBytes(beyond: offset)
            if case let .failed(reason) = outcome { throw CacheError.fillFailed(imageID: fill.imageID, reason: reason) }
            guard written > offset else {
                throw CacheError.fillFailed(imageID: fill.imageID, reason: "the fill ended at \(written) bytes, before offset \(offset)")
            }
            var end = min(range.upperBound, written - 1, offset + UInt64(Self.chunkSize) - 1)
            if verifyBeforeLastByte && end == range.upperBound && outcome == nil {
                if end == offset {
                    // Only the last byte is left: wait for the verdict, then loop.
                    _ = await fill.waitForBytes(beyond: written)
                    continue
                }
                end -= 1
            }
            let count = Int(end - offset + 1)
            var buffer = response.allocator.buffer(capacity: count)
            let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                pread(fd, raw.baseAddress, count, off_t(offset))
            }
            guard read == count else { throw CacheError.fillFailed(imageID: fill.imageID, reason: "short read from the fill at \(offset)") }
            try await response.body(buffer)
            offset = end + 1
        }
    }

    // MARK: Helpers

    static func baseHeaders(image: GlanceImage, cacheResult: String) -> HTTPHeaders {
        var headers: HTTPHeaders = ["content-type": "application/octet-stream", "accept-ranges": "bytes", "x-depot-cache": cacheResult]
        if let md5 = image.checksum { headers.add(name: "content-md5", value: md5) }
        return headers
    }

    /// The HTTP answer for a cache error; `headers` go with it (e.g. `connection: close` when
    /// the request's body was not read).
    func sendCacheError(_ error: CacheError, _ response: ResponseWriter, headers: HTTPHeaders = [:]) async {
        switch error {
        case let .backendRefused(status, message):
            await response.sendError(HTTPResponseStatus(statusCode: status), message, headers: headers)
        case let .imageNotActive(id, status) where status == "deactivated":
            await response.sendError(.forbidden, "The requested image \(id) has been deactivated. Image data download is forbidden.", headers: headers)
        case .imageNotActive:
            // Glance answers 204 No Content for an image that has no data yet.
            await response.send(.noContent, headers: headers)
        case .backendUnavailable:
            await response.sendError(.serviceUnavailable, error.description, headers: headers)
        case .unknownCloud:
            await response.sendError(.notFound, error.description, headers: headers)
        case .fillFailed:
            await response.sendError(.badGateway, error.description, headers: headers)
        case .budgetExhausted, .diskFloor, .diskFull:
            await response.sendError(.insufficientStorage, error.description, headers: headers)
        case .tooManyFills, .tooManyUploads:
            var headers = headers
            headers.replaceOrAdd(name: "retry-after", value: "5")
            await response.sendError(.serviceUnavailable, error.description, headers: headers)
        }
    }
}

/// The framing of a `multipart/byteranges` body.
struct Multipart {
    let ranges: [ClosedRange<UInt64>]
    let size: UInt64
    let boundary = "depot-" + String(UInt64.random(in: .min ... .max), radix: 16)

    var contentType: String { "multipart/byteranges; boundary=\(boundary)" }

    func partHeader(_ index: Int) -> String {
        let range = ranges[index]
        return "\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(range.lowerBound)-\(range.upperBound)/\(size)\r\n\r\n"
    }

    var closing: String { "\r\n--\(boundary)--\r\n" }

    var contentLength: UInt64 {
        ranges.indices.reduce(UInt64(closing.utf8.count)) { total, index in
            total + UInt64(partHeader(index).utf8.count) + ranges[index].count
        }
    }
}

extension ClosedRange where Bound == UInt64 {
    var count: UInt64 { upperBound - lowerBound + 1 }
}

/// Why a download streamed without a copy was cut short.
enum BypassError: Error, CustomStringConvertible {
    case mismatch(expected: Digest, actual: Digest)
    case tooLong(expected: UInt64)
    case tooShort(expected: UInt64, received: UInt64)

    var description: String {
        switch self {
        case let .mismatch(expected, actual): "content mismatch: Glance's \(expected.algorithm) is \(expected.hex), the bytes hash to \(actual.hex)"
        case let .tooLong(expected): "the image service sent more than the image's \(expected) bytes"
        case let .tooShort(expected, received): "the image service sent \(received) of the image's \(expected) bytes"
        }
    }
}
