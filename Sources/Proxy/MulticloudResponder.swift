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

/// The seed's Multicloud API under `/api/multicloud/v1/{cloud_owner}/{cloud_region}/`:
/// create-and-upload in one multipart request, download, and metadata with Depot's view.
struct MulticloudResponder {
    let cache: ImageCache
    let uploads: UploadSettings
    let logger: Logger

    typealias Route = Router.Multicloud

    func respond(_ request: Request, _ response: ResponseWriter, route: Route) async {
        let cloud: String
        switch route {
        case let .upload(name), let .file(name, _), let .metadata(name, _): cloud = name
        }
        switch (route, request.method) {
        case (.upload, .POST):
            await upload(request, response, cloud: cloud)
        case let (.file(_, imageID), .GET), let (.file(_, imageID), .HEAD):
            await ImageFileResponder(cache: cache, logger: logger).respond(request, response, cloud: cloud, imageID: imageID)
        case let (.metadata(_, imageID), .GET):
            await metadata(request, response, cloud: cloud, imageID: imageID)
        default:
            await response.sendError(.methodNotAllowed, "\(request.method.rawValue) is not allowed here; see the Multicloud API in the README", headers: ["connection": "close"])
        }
    }

    // MARK: Metadata

    /// Glance's record of the image (as the caller may see it) with Depot's view of it.
    func metadata(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String) async {
        let token = request.headers.first(name: "x-auth-token")
        guard let token, !token.isEmpty else {
            await response.sendError(.unauthorized, "send an X-Auth-Token")
            return
        }
        let image: GlanceImage
        do {
            image = try await cache.client(for: cloud).showImage(imageID, auth: .token(token))
        } catch let error as GlanceError {
            if let status = error.status, !error.isTransient {
                await response.sendError(HTTPResponseStatus(statusCode: status), GlanceError.message(of: error))
            } else {
                await response.sendError(.serviceUnavailable, "the image service of cloud \(cloud) is unreachable (\(error)); retry later")
            }
            return
        } catch {
            await response.sendError(.notFound, "\(error)")
            return
        }
        var document = (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(image))) as? [String: Any] ?? [:]
        document["depot"] = depotView(cloud: cloud, imageID: imageID)
        await response.sendJSON(.ok, document)
    }

    func depotView(cloud: String, imageID: String) -> [String: Any] {
        var view: [String: Any] = ["cloud": cloud, "cached": false]
        if let mapping = try? cache.catalog.mapping(cloud: cloud, imageID: imageID), cache.store.contains(mapping.digest) {
            view["cached"] = true
            view["sha256"] = mapping.sha256
            if let blob = try? cache.catalog.blob(mapping.digest) {
                view["size"] = blob.size
                view["hits"] = blob.hits
                view["last_access"] = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: blob.lastAccess))
                view["pinned"] = blob.pinned
            }
        }
        if let push = try? cache.catalog.push(cloud: cloud, imageID: imageID) {
            view["push"] = Self.pushView(push)
        }
        return view
    }

    static func pushView(_ push: PushRecord) -> [String: Any] {
        ["state": push.state.rawValue, "attempts": push.attempts, "last_error": push.lastError ?? NSNull()]
    }

    // MARK: Upload

    /// Fields of the form other than the file.
    static let fieldNames: Set<String> = ["name", "disk_format", "container_format", "visibility", "properties"]

    /// `POST …/images/file`: the file part is stored once while it arrives; then the image is
    /// created in the cloud with the caller's token and the bytes are owed to it.
    ///
    /// - Parameter onapTenant: the ONAP (VIO) shape: the image's name and disk format default
    ///   to the file's name and extension, the image must belong to this project, and the
    ///   answer's `status` is ONAP's `upload OK` (Glance's status is in `image_status`).
    func upload(_ request: Request, _ response: ResponseWriter, cloud: String, onapTenant: String? = nil) async {
        guard let token = request.headers.first(name: "x-auth-token"), !token.isEmpty else {
            await response.sendError(.unauthorized, "send an X-Auth-Token of the cloud \(cloud)", headers: ["connection": "close"])
            return
        }
        guard let boundary = request.headers.first(name: "content-type").flatMap(MultipartParser.boundary(contentType:)) else {
            await response.sendError(
                .unsupportedMediaType, "send multipart/form-data with a file part and the fields name, disk_format, container_format, visibility, properties",
                headers: ["connection": "close"])
            return
        }
        if let length = request.body.declaredLength, length > uploads.maximumSize + 1 << 20 {
            await response.sendError(.payloadTooLarge, UploadError.tooLarge(size: length, limit: uploads.maximumSize).description, headers: ["connection": "close"])
            return
        }
        guard await response.continueIfExpected(request) else { return }
        // Kept from the moment the blob's name is known until its push holds it.
        let uploadHold = cache.uploads.hold(named: request.id)
        defer { uploadHold.release() }
        let received: ReceivedForm
        do {
            received = try await receive(request, boundary: boundary, hold: uploadHold, formatFromFileName: onapTenant != nil)
        } catch let failure as FormFailure {
            await response.sendError(failure.status, failure.message, headers: ["connection": "close"])
            return
        } catch {
            // The body ended early; a client that only closed its sending side hears it.
            await response.sendError(.badRequest, "the request body ended early (\(error)); nothing was kept: send the whole form again", headers: ["connection": "close"])
            return
        }
        var blobKept = false
        defer {
            // No image took the bytes: they stay an ordinary, evictable cache entry that no
            // one can read (no image maps to them).
            if !blobKept { cache.uploads.keepUnreferenced(received.blob, reserved: received.reserved) }
        }
        let named = onapTenant == nil ? nil : received.fileName.map(Self.nameAndFormat)
        var properties: [String: JSONValue] = [
            "name": .string(received.fields["name"] ?? named?.name ?? "image"),
            "disk_format": .string(received.fields["disk_format"] ?? named?.diskFormat ?? "raw"),
            "container_format": .string(received.fields["container_format"] ?? "bare"),
            "visibility": .string(received.fields["visibility"] ?? "private"),
        ]
        if let text = received.fields["properties"], !text.isEmpty {
            guard let extra = try? JSONDecoder().decode([String: JSONValue].self, from: Data(text.utf8)) else {
                await response.sendError(.badRequest, "properties must be a JSON object, e.g. {\"os_distro\": \"ubuntu\"}")
                return
            }
            for (key, value) in extra where properties[key] == nil { properties[key] = value }
        }
        let image: GlanceImage
        do {
            image = try await cache.client(for: cloud).createImage(properties, auth: .token(token))
        } catch let error as GlanceError {
            let status = error.status.flatMap { error.isTransient ? nil : $0 } ?? 503
            await response.sendError(HTTPResponseStatus(statusCode: status), "the image service of cloud \(cloud) did not create the image: \(GlanceError.message(of: error))")
            return
        } catch {
            await response.sendError(.notFound, "\(error)")
            return
        }
        if let onapTenant, image.owner != onapTenant {
            // The project was checked before the body; Glance's owner is the last word.
            try? await cache.client(for: cloud).deleteImage(image.id, auth: .token(token))
            await response.sendError(.forbidden, "the token's project \(image.owner ?? "?") is not the tenant \(onapTenant) of the path; nothing was kept")
            return
        }
        let target = UploadTarget(cloud: cloud, image: image, method: .upload)
        let writeThrough = uploads.mode == .writeThrough
        var push: PushRecord
        // Held for its push first, then counted in the budget: never evictable in between.
        do {
            push = try await cache.uploads.accept(received.blob, for: target, staged: false, claimed: writeThrough, virtualSize: received.virtualSize)
        } catch let error as UploadError {
            cache.uploads.settle(reserved: received.reserved, committed: received.blob)
            blobKept = true
            await response.sendError(.serviceUnavailable, error.description)
            return
        } catch {
            cache.uploads.settle(reserved: received.reserved, committed: received.blob)
            blobKept = true
            await response.sendError(.internalServerError, "Depot stored the bytes but could not record the upload (\(error)); retry")
            return
        }
        cache.uploads.settle(reserved: received.reserved, committed: received.blob)
        blobKept = true
        var status = HTTPResponseStatus.created
        if writeThrough {
            let (result, backendStatus) = await cache.uploads.pushNow(push, token: token)
            push = result
            if result.state != .done { status = backendStatus.map { HTTPResponseStatus(statusCode: $0) } ?? .badGateway }
        }
        let blob = received.blob
        // The answer carries Glance's checksums of the bytes: computed now if not yet known.
        let record = try? await cache.uploads.completeDigests(blob.digest)
        var document: [String: Any] = [
            "id": image.id, "name": image.name ?? NSNull(), "status": image.status ?? NSNull(), "size": blob.size,
            "sha256": blob.digest.hex, "checksum": record?.md5 ?? NSNull(), "os_hash_algo": "sha512",
            "os_hash_value": record?.sha512 ?? NSNull(), "push": Self.pushView(push),
        ]
        if onapTenant != nil {
            document["image_status"] = document["status"]
            document["status"] = status == .created ? "upload OK" : "upload failed"
        }
        await response.sendJSON(status, document, headers: ["location": "\(Router.multicloudPrefix)\(cloud.replacingOccurrences(of: "_", with: "/"))/images/\(image.id)"])
    }

    /// ONAP's plugin took the image's name and disk format from the uploaded file's name:
    /// "cirros-0.6.qcow2" → ("cirros-0.6", "qcow2"); an extension Glance does not know as a
    /// disk format (".img", none) means raw.
    static func nameAndFormat(_ fileName: String) -> (name: String, diskFormat: String) {
        let base = fileName.split(separator: "/").last.map(String.init) ?? fileName
        guard let dot = base.lastIndex(of: "."), dot != base.startIndex else { return (base, "raw") }
        let ext = base[base.index(after: dot)...].lowercased()
        let formats: Set<String> = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
        return (String(base[..<dot]), formats.contains(ext) ? ext : "raw")
    }

    struct ReceivedForm {
        var fields: [String: String]
        /// The file part's `filename`, if it had one.
        var fileName: String?
        var blob: CommittedBlob
        var reserved: UInt64
        /// Glance's `virtual_size` for the file, from its inspection.
        var virtualSize: Int64?
    }

    struct FormFailure: Error {
        let status: HTTPResponseStatus
        let message: String
    }

    /// Reads the whole form: fields into memory (small), the file part into a new blob, which
    /// is committed only once the form has ended and Glance's format inspection, with the
    /// form's `disk_format` and `container_format`, takes the file (415 otherwise, nothing kept).
    ///
    /// - Parameter formatFromFileName: without a `disk_format` field, the file's name gives it
    ///   (the ONAP shape), as it will for the image Depot creates.
    private func receive(_ request: Request, boundary: String, hold: UploadHold, formatFromFileName: Bool) async throws -> ReceivedForm {
        var parser: MultipartParser
        do { parser = try MultipartParser(boundary: boundary) } catch {
            throw FormFailure(status: .badRequest, message: error.description)
        }
        // The whole request bounds the file: reserve that, or grow the reservation as it comes.
        guard cache.uploads.slots.tryAcquire() else {
            throw FormFailure(status: .serviceUnavailable, message: CacheError.tooManyUploads(running: cache.uploads.slots.limit).description)
        }
        defer { cache.uploads.slots.release() }
        var reserved = request.body.declaredLength ?? UploadResponder.reservationStep
        do { try await cache.uploads.reserve(reserved) } catch {
            throw FormFailure(status: .insufficientStorage, message: error.description)
        }
        var fields: [String: String] = [:]
        var ingest: BlobIngest?
        var current: (name: String?, isFile: Bool, value: [UInt8])?
        var fileBytes: UInt64 = 0
        var fileName: String?
        var inspector = FormatInspector()
        var fileEnded = false
        var virtualSize: Int64?
        var blob: CommittedBlob?
        func fail(_ status: HTTPResponseStatus, _ message: String) async -> FormFailure {
            await ingest?.abort(message)
            cache.uploads.settle(reserved: reserved, committed: nil)
            return FormFailure(status: status, message: message)
        }
        do {
            var ended = false
            while let chunk = try await request.body.next() {
                let events: [MultipartParser.Event]
                do { events = try parser.feed(chunk.readableBytesView) } catch {
                    throw await fail(.badRequest, "the multipart body is malformed: \(error); nothing was kept")
                }
                for event in events {
                    switch event {
                    case let .partStart(headers):
                        let (name, filename) = MultipartParser.Event.disposition(headers)
                        let isFile = name == "file" || filename != nil
                        if isFile {
                            guard ingest == nil, !fileEnded else { throw await fail(.badRequest, "send one file part") }
                            fileName = filename
                            do {
                                ingest = try cache.uploads.ingest(expecting: .init(), hold: hold)
                            } catch {
                                throw await fail(.insufficientStorage, "\(error)")
                            }
                        }
                        current = (name, isFile, [])
                    case let .partData(bytes):
                        guard var part = current else { continue }
                        if part.isFile {
                            inspector.feed(bytes)
                            fileBytes += UInt64(bytes.count)
                            if fileBytes > uploads.maximumSize {
                                throw await fail(.payloadTooLarge, UploadError.tooLarge(size: fileBytes, limit: uploads.maximumSize).description)
                            }
                            while fileBytes > reserved {
                                do { try await cache.uploads.reserve(UploadResponder.reservationStep) } catch {
                                    throw await fail(.insufficientStorage, "\(error)")
                                }
                                reserved += UploadResponder.reservationStep
                            }
                            guard await ingest!.send(bytes) else {
                                let reason = await ingest!.failure().map { "\($0)" } ?? "the write failed"
                                throw await fail(.insufficientStorage, reason)
                            }
                        } else {
                            part.value += bytes
                            guard part.value.count <= 64 << 10 else { throw await fail(.badRequest, "form field \(part.name ?? "?") is larger than 64 KiB") }
                            current = part
                        }
                    case .partEnd:
                        guard let part = current else { continue }
                        if part.isFile {
                            // Committed once the fields that decide its format are all known.
                            fileEnded = true
                        } else if let name = part.name {
                            guard Self.fieldNames.contains(name) else {
                                throw await fail(.badRequest, "unknown form field \(name); the fields are file, \(Self.fieldNames.sorted().joined(separator: ", "))")
                            }
                            fields[name] = String(decoding: part.value, as: UTF8.self)
                        }
                        current = nil
                    case .end:
                        ended = true
                    }
                }
            }
            guard ended else { throw await fail(.badRequest, "the multipart body ended before its closing boundary; nothing was kept") }
            if let pending = ingest {
                let inspection = inspector.finish()
                let named = formatFromFileName ? fileName.map { Self.nameAndFormat($0).diskFormat } : nil
                let verdict = inspection.verdict(
                    diskFormat: fields["disk_format"] ?? named ?? "raw", containerFormat: fields["container_format"] ?? "bare", policy: uploads.formats)
                if let refusal = verdict.refusal { throw await fail(.unsupportedMediaType, refusal.description) }
                virtualSize = verdict.virtualSize
                do { blob = try await pending.finish() } catch {
                    ingest = nil
                    if case .diskFull = error {
                        throw await fail(.insufficientStorage, "Depot's disk is full; nothing was kept. Free space in its data directory or retry later")
                    }
                    throw await fail(.internalServerError, "Depot could not store the file: \(error)")
                }
                ingest = nil
            }
        } catch let failure as FormFailure {
            if let blob { cache.uploads.keepUnreferenced(blob, reserved: 0) }
            throw failure
        } catch {
            // The client went away mid-body.
            _ = await fail(.badRequest, "\(error)")
            if let blob { cache.uploads.keepUnreferenced(blob, reserved: 0) }
            throw error
        }
        guard let blob else {
            cache.uploads.settle(reserved: reserved, committed: nil)
            throw FormFailure(status: .badRequest, message: "the form has no file part; send the image as a part named file")
        }
        return ReceivedForm(fields: fields, fileName: fileName, blob: blob, reserved: reserved, virtualSize: virtualSize)
    }
}

