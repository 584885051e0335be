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
        let token = request.authToken
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
        guard let token = request.authToken, !token.isEmpty else {
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
        // No image took the bytes: they stay an ordinary, evictable cache entry that no one
        // can read (no image maps to them). Not in a defer: it writes to the Catalog, awaited.
        guard let properties = Self.imageProperties(received, onap: onapTenant != nil) else {
            await response.sendError(.badRequest, "properties must be a JSON object, e.g. {\"os_distro\": \"ubuntu\"}")
            await cache.uploads.keepUnreferenced(received.blob, reserved: received.reserved)
            return
        }
        guard let image = await createImage(properties, cloud: cloud, token: token, onapTenant: onapTenant, response) else {
            await cache.uploads.keepUnreferenced(received.blob, reserved: received.reserved)
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
            await response.sendError(.serviceUnavailable, error.description)
            return
        } catch {
            cache.uploads.settle(reserved: received.reserved, committed: received.blob)
            await response.sendError(.internalServerError, "Depot stored the bytes but could not record the upload (\(error)); retry")
            return
        }
        cache.uploads.settle(reserved: received.reserved, committed: received.blob)
        var status = HTTPResponseStatus.created
        if writeThrough {
            let (result, backendStatus) = await cache.uploads.pushNow(push, token: token)
            push = result
            if result.state != .done { status = backendStatus.map { HTTPResponseStatus(statusCode: $0) } ?? .badGateway }
        }
        let document = await answer(image: image, blob: received.blob, push: push, uploaded: status == .created, onap: onapTenant != nil)
        await response.sendJSON(status, document, headers: ["location": "\(Router.multicloudPrefix)\(cloud.replacingOccurrences(of: "_", with: "/"))/images/\(image.id)"])
    }

    /// The new image's properties: the form's fields (with ONAP's defaults from the file's
    /// name), then its `properties` JSON for keys the fields did not set. Nil when that JSON is
    /// not an object.
    static func imageProperties(_ received: ReceivedForm, onap: Bool) -> [String: JSONValue]? {
        let named = onap ? received.fileName.map(Self.nameAndFormat) : nil
        var properties: [String: JSONValue] = [
            "name": .string(received.fields["name"] ?? named?.name ?? "image"),
            "disk_format": .string(received.fields["disk_format"] ?? named?.diskFormat ?? "raw"),
            "container_format": .string(received.fields["container_format"] ?? "bare"),
            "visibility": .string(received.fields["visibility"] ?? "private"),
        ]
        if let text = received.fields["properties"], !text.isEmpty {
            guard let extra = try? JSONDecoder().decode([String: JSONValue].self, from: Data(text.utf8)) else { return nil }
            for (key, value) in extra where properties[key] == nil { properties[key] = value }
        }
        return properties
    }

    /// Creates the image in the cloud with the caller's token; nil once the refusal was sent
    /// (Glance's, or an ONAP tenant that does not own the new image, which is deleted again).
    private func createImage(
        _ properties: [String: JSONValue], cloud: String, token: String, onapTenant: String?, _ response: ResponseWriter
    ) async -> GlanceImage? {
        let image: GlanceImage
        do {
            image = try await cache.client(for: cloud).createImage(properties, auth: .token(token))
        } catch let error as GlanceError {
            let status = error.status.flatMap { error.isTransient ? nil : $0 } ?? 503
            await response.sendError(HTTPResponseStatus(statusCode: status), "the image service of cloud \(cloud) did not create the image: \(GlanceError.message(of: error))")
            return nil
        } catch {
            await response.sendError(.notFound, "\(error)")
            return nil
        }
        if let onapTenant, image.owner != onapTenant {
            // The project was checked before the body; Glance's owner is the last word.
            try? await cache.client(for: cloud).deleteImage(image.id, auth: .token(token))
            await response.sendError(.forbidden, "the token's project \(image.owner ?? "?") is not the tenant \(onapTenant) of the path; nothing was kept")
            return nil
        }
        return image
    }

    /// The answer's document: the image, the bytes with Glance's checksums (computed now if not
    /// yet known) and the push; ONAP's shape puts its own `status` first.
    private func answer(image: GlanceImage, blob: CommittedBlob, push: PushRecord, uploaded: Bool, onap: Bool) async -> [String: Any] {
        let record = try? await cache.uploads.completeDigests(blob.digest)
        var document: [String: Any] = [
            "id": image.id, "name": image.name ?? NSNull(), "status": image.status ?? NSNull(), "size": blob.size,
            "sha256": blob.digest.hex, "checksum": record?.md5 ?? NSNull(), "os_hash_algo": "sha512",
            "os_hash_value": record?.sha512 ?? NSNull(), "push": Self.pushView(push),
        ]
        if onap {
            document["image_status"] = document["status"]
            document["status"] = uploaded ? "upload OK" : "upload failed"
        }
        return document
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
}
