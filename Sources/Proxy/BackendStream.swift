import BlobStore
import Cache
import Glance
import HTTPCore
import HTTPSemantics
import Logging
import NIOCore
import NIOHTTP1

/// An image's bytes straight from the backend, keeping no copy: a download the cache budget
/// has no room for (`x-depot-cache: bypass`), or a range far ahead of a running fill.
///
/// Bytes from the backend are unverified until the whole image hashed to Glance's value. A
/// response whose body ends at the image's last byte holds that byte until then, and is cut
/// short when the check fails: a wrong image never looks complete, on any path.
struct BackendStream {
    let cache: ImageCache
    let authorized: AuthorizedImage
    let logger: Logger

    var image: GlanceImage { authorized.image }
    var size: UInt64 { image.size ?? 0 }

    private func open(_ range: ClosedRange<UInt64>) async throws -> ImageDownload {
        try await cache.backendRange(cloud: authorized.cloud, imageID: image.id, range: range)
    }

    /// Serves a plan without a copy (`x-depot-cache: bypass`).
    ///
    /// A body that ends at the image's last byte reads the whole image once, from its first
    /// byte, to check it against Glance's hash; any other body reads just its ranges.
    func serve(_ plan: ResponsePlan, to response: ResponseWriter) async {
        let headers = plan.httpHeaders(cacheResult: "bypass")
        do {
            // The backend's answer is awaited before the head, so a refusal is still an error
            // answer rather than a broken transfer.
            if plan.carriesLastByte(ofSize: size) {
                let download = try await open(0...(size - 1))
                try await response.head(HTTPResponseStatus(statusCode: plan.status), headers)
                try await relayVerified(download, plan: plan, to: response)
            } else {
                var opened: ImageDownload? = try await open(plan.ranges[0])
                try await response.head(HTTPResponseStatus(statusCode: plan.status), headers)
                var cursor = BodyCursor(plan)
                for range in plan.ranges {
                    let download: ImageDownload
                    if let first = opened { download = first } else { download = try await open(range) }
                    opened = nil
                    try await relay(download, range: range, through: &cursor, to: response)
                }
                try await write(cursor.feed([], at: size), to: response)
            }
            try await response.end()
        } catch {
            // Wrong bytes from the backend are worth an operator's look; a client gone is not.
            logger.log(level: error is BackendStreamError ? .error : .info, "download from the backend without a copy ended early",
                       metadata: ["image": "\(image.id)", "error": "\(error)"])
            if response.headSent {
                response.abort()
            } else {
                await ImageFileResponder(cache: cache, logger: logger).sendCacheError(.fillFailed(imageID: image.id, reason: "\(error)"), response)
            }
        }
    }

    /// Serves a single range far ahead of a running fill from its own backend request.
    ///
    /// When the range ends at the image's last byte, that byte waits for the fill's verdict,
    /// and the bytes sent must equal the verified blob's: they came on another stream.
    func serveAhead(of fill: Fill, _ plan: ResponsePlan, to response: ResponseWriter) async throws {
        let range = plan.ranges[0]
        let download = try await open(range)
        try await response.head(HTTPResponseStatus(statusCode: plan.status), plan.httpHeaders(cacheResult: "miss"))
        var cursor = BodyCursor(plan)
        guard range.upperBound == size - 1 else {
            try await relay(download, range: range, through: &cursor, to: response)
            try await response.end()
            return
        }
        let sent = DigestHasher(.sha256)
        var offset = range.lowerBound
        var last: UInt8?
        for try await chunk in download where !chunk.isEmpty {
            guard offset + UInt64(chunk.count) <= size else { throw BackendStreamError.tooLong(expected: size) }
            var bytes = chunk[...]
            if offset + UInt64(chunk.count) == size {
                last = bytes.last
                bytes = bytes.dropLast()
            }
            bytes.withUnsafeBytes { sent.update($0) }
            try await write(cursor.feed(bytes, at: offset), to: response)
            offset += UInt64(chunk.count)
        }
        guard offset == size, let last else { throw BackendStreamError.tooShort(expected: size - range.lowerBound, received: offset - range.lowerBound) }
        guard case .committed = await fill.ended() else {
            throw CacheError.fillFailed(imageID: image.id, reason: "the image did not verify; its last byte was held back")
        }
        let (verified, lastVerified) = try await cache.hashRange(of: fill, range.lowerBound..<(size - 1))
        guard verified == sent.finish(), lastVerified == last else { throw BackendStreamError.differsFromVerified(range: range) }
        try await write(cursor.feed([last], at: size - 1), to: response)
        try await response.end()
    }

    /// Relays one range's download into the body.
    private func relay(_ download: ImageDownload, range: ClosedRange<UInt64>, through cursor: inout BodyCursor, to response: ResponseWriter) async throws {
        var offset = range.lowerBound
        for try await chunk in download where !chunk.isEmpty {
            guard offset + UInt64(chunk.count) <= range.upperBound + 1 else { throw BackendStreamError.tooLong(expected: range.byteCount) }
            try await write(cursor.feed(chunk[...], at: offset), to: response)
            offset += UInt64(chunk.count)
        }
        guard offset == range.upperBound + 1 else {
            throw BackendStreamError.tooShort(expected: range.byteCount, received: offset - range.lowerBound)
        }
    }

    /// Relays the whole image into the body, hashing it; the last byte goes out only once the
    /// hash matched Glance's (SHA-512, else MD5).
    private func relayVerified(_ download: ImageDownload, plan: ResponsePlan, to response: ResponseWriter) async throws {
        let expected = ImageCache.provingDigest(of: image)
        let hasher = expected.map { DigestHasher($0.algorithm) }
        var cursor = BodyCursor(plan)
        var offset: UInt64 = 0
        var last: UInt8?
        for try await chunk in download where !chunk.isEmpty {
            guard offset + UInt64(chunk.count) <= size else { throw BackendStreamError.tooLong(expected: size) }
            chunk.withUnsafeBytes { hasher?.update($0) }
            var bytes = chunk[...]
            if offset + UInt64(chunk.count) == size {
                last = bytes.last
                bytes = bytes.dropLast()
            }
            try await write(cursor.feed(bytes, at: offset), to: response)
            offset += UInt64(chunk.count)
        }
        guard offset == size, let last else { throw BackendStreamError.tooShort(expected: size, received: offset) }
        if let expected, let actual = hasher?.finish(), actual != expected {
            throw BackendStreamError.mismatch(expected: expected, actual: actual)
        }
        try await write(cursor.feed([last], at: size - 1), to: response)
    }

    private func write(_ pieces: [ArraySlice<UInt8>], to response: ResponseWriter) async throws {
        for piece in pieces where !piece.isEmpty { try await response.body(response.allocator.buffer(bytes: piece)) }
    }
}

/// Why bytes streamed from the backend were cut short.
enum BackendStreamError: Error, CustomStringConvertible {
    case mismatch(expected: Digest, actual: Digest)
    case tooLong(expected: UInt64)
    case tooShort(expected: UInt64, received: UInt64)
    case differsFromVerified(range: ClosedRange<UInt64>)

    var description: String {
        switch self {
        case let .mismatch(expected, actual): "content mismatch: Glance's \(expected.algorithm) is \(expected.hex), the bytes hash to \(actual.hex)"
        case let .tooLong(expected): "the image service sent more than the \(expected) bytes asked for"
        case let .tooShort(expected, received): "the image service sent \(received) of \(expected) bytes"
        case let .differsFromVerified(range): "the image service's bytes \(range.lowerBound)-\(range.upperBound) differ from the verified image's"
        }
    }
}
