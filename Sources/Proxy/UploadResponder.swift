import BlobStore
import Cache
import Catalog
import FormatInspector
import Foundation
import Glance
import HTTPCore
import HTTPSemantics
import Logging
import NIOCore
import NIOHTTP1

/// When an upload is acknowledged.
public enum UploadMode: String, Sendable {
    /// 204 once the bytes are durable on Depot's disk; Glance gets them in the background.
    case writeBack = "write-back"
    /// 204 only once Glance accepted the bytes (pushed with the caller's token).
    case writeThrough = "write-through"
}

/// How Depot takes uploads.
public struct UploadSettings: Sendable {
    public var mode: UploadMode = .writeBack
    /// The largest upload accepted (413 beyond); Glance's own `image_size_cap` default.
    public var maximumSize: UInt64 = 1 << 40
    /// Glance's `[image_format]` options the inspection of uploads follows.
    public var formats = FormatPolicy()

    public init() {}
}

/// Answers `PUT /v2/images/{id}/file` and `PUT /v2/images/{id}/stage`: authorize with the
/// backend, store the body once (SHA-256 while it arrives, fsync), acknowledge, and owe the
/// bytes to Glance through the push queue. SHA-512 and MD5 follow in the background
/// (`UploadAcceptor.completeDigests`), so the acknowledgement runs at disk speed.
struct UploadResponder {
    let cache: ImageCache
    let settings: UploadSettings
    let logger: Logger

    /// Bytes reserved at a time for a body of unknown length.
    static let reservationStep: UInt64 = 64 << 20

    func respond(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String, method: PushRecord.Method) async {
        guard ImageFileResponder.isPlausibleImageID(imageID) else {
            await refuse(response, .notFound, "No image found with ID \(imageID); image ids are UUIDs")
            return
        }
        let token = request.authToken
        let declaredLength = request.body.declaredLength
        if let declaredLength, declaredLength > settings.maximumSize {
            await refuse(response, .payloadTooLarge, UploadError.tooLarge(size: declaredLength, limit: settings.maximumSize).description)
            return
        }
        let declaredDigest: Digest?
        do {
            declaredDigest = try Self.declaredSHA256(request.headers)
        } catch {
            await refuse(response, .badRequest, "\(error)")
            return
        }
        let target: UploadTarget
        do {
            target = try await cache.uploads.authorizeUpload(token: token, cloud: cloud, imageID: imageID, method: method)
        } catch {
            await refuse(response, error)
            return
        }
        if let declaredDigest, request.head.expectsContinue, let token,
           let blob = cache.uploads.storedBlob(declaredDigest),
           await cache.callerMayRead(declaredDigest, token: token) {
            if let declaredLength, declaredLength != UInt64(blob.size) {
                await refuse(response, .badRequest, "Content-Length says \(declaredLength) bytes but the declared digest names \(blob.size) bytes")
                return
            }
            // The caller may already read these bytes: the body need not travel. Glance will
            // inspect them for this image's formats all the same.
            let verdict: FormatVerdict
            do {
                verdict = target.verdict(try await cache.uploads.inspectStored(blob.digest), policy: settings.formats)
            } catch {
                await refuse(response, error)
                return
            }
            if let refusal = refusal(verdict, target: target) {
                await refuse(response, .unsupportedMediaType, refusal)
                return
            }
            logger.info("instant upload: body skipped", metadata: ["cloud": "\(cloud)", "image": "\(imageID)", "blob": "\(blob.sha256)"])
            await finish(
                request, response, blob: blob.committed(path: cache.uploads.path(of: blob.digest)), target: target, token: token, instant: true,
                virtualSize: verdict.virtualSize)
            return
        }
        // Refused before the body is asked for: each upload holds a writer thread and buffers.
        guard cache.uploads.slots.tryAcquire() else {
            await refuse(response, CacheError.tooManyUploads(running: cache.uploads.slots.limit))
            return
        }
        defer { cache.uploads.slots.release() }
        guard await response.continueIfExpected(request) else { return }
        await ingest(request, response, target: target, token: token, declaredLength: declaredLength, declaredDigest: declaredDigest)
    }

    // MARK: Receiving the body

    private func ingest(
        _ request: Request, _ response: ResponseWriter, target: UploadTarget, token: String?, declaredLength: UInt64?, declaredDigest: Digest?
    ) async {
        var reserved = declaredLength ?? Self.reservationStep
        do {
            try await cache.uploads.reserve(reserved)
        } catch {
            await refuse(response, .insufficientStorage, "\(error)")
            return
        }
        let ingest: BlobIngest
        // Kept from the moment the blob's name is known until its push holds it.
        let uploadHold = cache.uploads.hold(named: request.id)
        defer { uploadHold.release() }
        do {
            ingest = try cache.uploads.ingest(expecting: BlobExpectation(size: declaredLength, sha256: declaredDigest), hold: uploadHold)
        } catch {
            cache.uploads.settle(reserved: reserved, committed: nil)
            await refuse(response, error)
            return
        }
        var refusal: (HTTPResponseStatus, String)?
        // Glance's format inspection, in the same pass as the hashing.
        var inspector = FormatInspector()
        switch await receiveBody(request, into: ingest, reserved: &reserved, inspector: &inspector) {
        case .received:
            break
        case let .refused(status, message):
            refusal = (status, message)
        case let .endedEarly(received, error):
            // The body ended early (the client stopped sending, or its framing broke): nothing
            // is kept, and a client that is still there (one that only closed its sending side)
            // hears why. Writing to one that is gone fails quietly.
            await ingest.abort("the client stopped after \(received) bytes: \(error)")
            cache.uploads.settle(reserved: reserved, committed: nil)
            logger.warning("upload abandoned; nothing was kept", metadata: ["image": "\(target.image.id)", "received": "\(received)", "error": "\(error)"])
            let expected = request.body.declaredLength.map { " of the \($0) its Content-Length announced" } ?? ""
            await response.sendError(
                .badRequest, "the request body ended after \(received) bytes\(expected); nothing was kept: send the whole body again",
                headers: ["connection": "close"])
            return
        }
        let verdict = target.verdict(inspector.finish(), policy: settings.formats)
        if refusal == nil, let refused = self.refusal(verdict, target: target) {
            // As in Glance, the bytes are stored first: a full disk is the answer before the format.
            do {
                try await ingest.discard(refused)
                cache.uploads.settle(reserved: reserved, committed: nil)
                await refuse(response, .unsupportedMediaType, refused)
            } catch {
                cache.uploads.settle(reserved: reserved, committed: nil)
                await refuse(response, error)
            }
            return
        }
        if let refusal {
            await ingest.abort(refusal.1)
            cache.uploads.settle(reserved: reserved, committed: nil)
            await refuse(response, refusal.0, refusal.1)
            return
        }
        let blob: CommittedBlob
        do {
            blob = try await ingest.finish()
        } catch {
            cache.uploads.settle(reserved: reserved, committed: nil)
            await refuse(response, error)
            return
        }
        logger.info(
            "upload stored", metadata: ["image": "\(target.image.id)", "blob": "\(blob.digest.hex)", "size": "\(blob.size)", "deduplicated": "\(blob.deduplicated)"])
        await finish(request, response, blob: blob, reserved: reserved, target: target, token: token, instant: false, virtualSize: verdict.virtualSize)
    }

    /// How receiving a body ended.
    private enum BodyOutcome {
        /// All of it went to the blob (or the blob's write failed, which `finish` reports).
        case received
        /// Depot stopped taking it: too large, or no room in the budget.
        case refused(HTTPResponseStatus, String)
        /// The client stopped sending (or its framing broke) after this many bytes.
        case endedEarly(after: UInt64, any Error)
    }

    /// Streams the body into `ingest` and `inspector`, growing the budget reservation as the
    /// bytes exceed it.
    private func receiveBody(_ request: Request, into ingest: BlobIngest, reserved: inout UInt64, inspector: inout FormatInspector) async -> BodyOutcome {
        var received: UInt64 = 0
        do {
            while let chunk = try await request.body.next() {
                received += UInt64(chunk.readableBytes)
                if received > settings.maximumSize {
                    return .refused(.payloadTooLarge, UploadError.tooLarge(size: received, limit: settings.maximumSize).description)
                }
                while received > reserved {
                    try await cache.uploads.reserve(Self.reservationStep)
                    reserved += Self.reservationStep
                }
                let bytes = Array(chunk.readableBytesView)
                inspector.feed(bytes)
                guard await ingest.send(bytes) else { break }
            }
        } catch let error as CacheError {
            return .refused(.insufficientStorage, error.description)
        } catch {
            return .endedEarly(after: received, error)
        }
        return .received
    }

    /// The message of Glance's refusal of these bytes for the image, when Glance refuses them
    /// at upload time. Staged bytes are taken whatever they are, as Glance's stage takes them:
    /// Glance inspects them during the import and fails it there, as it would without Depot.
    private func refusal(_ verdict: FormatVerdict, target: UploadTarget) -> String? {
        guard let refusal = verdict.refusal else { return nil }
        guard target.method == .upload else {
            logger.warning(
                "staged data that Glance's import will refuse", metadata: ["image": "\(target.image.id)", "reason": "\(refusal.glanceMessage)"])
            return nil
        }
        logger.info("upload refused by the format inspection", metadata: ["image": "\(target.image.id)", "reason": "\(refusal)"])
        return refusal.description
    }

    // MARK: Acknowledging

    /// Records the upload and answers. `reserved` is the budget room the body took; the blob
    /// takes its place once it is held for its push, so it is never evictable in between.
    private func finish(
        _ request: Request, _ response: ResponseWriter, blob: CommittedBlob, reserved: UInt64 = 0, target: UploadTarget, token: String?, instant: Bool,
        virtualSize: Int64?
    ) async {
        let staged = target.method == .glanceDirect
        let writeThrough = settings.mode == .writeThrough && !staged
        var headers: HTTPHeaders = ["x-depot-blob": blob.digest.hex]
        // A skipped body was never sent: the connection cannot carry another request.
        if instant { headers.add(name: "connection", value: "close") }
        let push: PushRecord
        do {
            push = try await cache.uploads.accept(blob, for: target, staged: staged, claimed: writeThrough, virtualSize: virtualSize)
            cache.uploads.settle(reserved: reserved, committed: blob)
        } catch let error as UploadError {
            cache.uploads.settle(reserved: reserved, committed: blob)
            await refuse(response, error)
            return
        } catch {
            cache.uploads.settle(reserved: reserved, committed: blob)
            logger.error("cannot record the upload", metadata: ["image": "\(target.image.id)", "error": "\(error)"])
            await refuse(response, .internalServerError, "Depot stored the bytes but could not record the upload (\(error)); retry the upload")
            return
        }
        cache.uploads.completeDigestsLater(blob.digest)
        guard writeThrough, let token else {
            headers.add(name: "x-depot-push", value: push.state.rawValue)
            await response.send(.noContent, headers: headers)
            return
        }
        let (result, status) = await cache.uploads.pushNow(push, token: token)
        headers.add(name: "x-depot-push", value: result.state.rawValue)
        if result.state == .done {
            await response.send(.noContent, headers: headers)
        } else {
            let code = status.map { HTTPResponseStatus(statusCode: $0) } ?? .badGateway
            await response.sendError(code, "the image service did not take the data: \(result.lastError ?? "unknown error")", headers: headers)
        }
    }

    // MARK: Errors

    /// An error answer; the connection closes when the body was not read (it may be huge, or
    /// the client may be waiting for 100 Continue).
    private func refuse(_ response: ResponseWriter, _ status: HTTPResponseStatus, _ message: String) async {
        await response.sendError(status, message, headers: ["connection": "close"])
    }

    private func refuse(_ response: ResponseWriter, _ error: any Error) async {
        if let error = error as? CacheError {
            await ImageFileResponder(cache: cache, logger: logger).sendCacheError(error, response, headers: ["connection": "close"])
        } else {
            await response.sendError(error, headers: ["connection": "close"])
        }
    }

    // MARK: Declared digests

    /// The SHA-256 a request declares for its body: `Repr-Digest` or `Content-Digest`
    /// (RFC 9530, `sha-256=:BASE64:`) or `X-Image-Sha256: HEX`. Nil when none is declared.
    static func declaredSHA256(_ headers: HTTPHeaders) throws -> Digest? {
        if let hex = headers.first(name: "x-image-sha256") {
            do {
                return try Digest.sha256(hex: hex.trimmingCharacters(in: .whitespaces))
            } catch {
                throw DeclaredDigestError(message: "X-Image-Sha256 must be 64 hex digits, got \(hex.prefix(80))")
            }
        }
        do {
            let bytes = try IntegrityFields.sha256(reprDigest: headers["repr-digest"], contentDigest: headers["content-digest"])
            return bytes.map { Digest(algorithm: .sha256, bytes: $0) }
        } catch {
            throw DeclaredDigestError(message: error.message)
        }
    }
}

struct DeclaredDigestError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
