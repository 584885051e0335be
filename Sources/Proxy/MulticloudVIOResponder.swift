import BlobStore
import Cache
import Foundation
import Glance
import HTTPCore
import Logging
import NIOCore
import NIOHTTP1

/// The image routes of ONAP Multicloud's VMware (VIO) plugin, the seed's own API, so ONAP
/// callers work unchanged: `/api/multicloud-vio/v0/{vimid}/{tenantid}/images/file[/{imageid}]`.
///
/// `vimid` is `{cloud_owner}_{cloud_region_id}`, a configured cloud; `tenantid` is the project,
/// and the caller's token must be scoped to it (asked of Keystone, or of Glance: see
/// `GlanceClient.tokenProject`).
/// - `POST …/images/file`: multipart with `file`; creates and uploads the image as Depot's
///   Multicloud upload does, named after the file; 201 `{"status": "upload OK", "id": …}`.
/// - `GET|HEAD …/images/file/{imageid}`: the image's bytes, from the cache.
/// - `POST …/images/file/{imageid}` with `{"imagePath": DIR}`: writes the image as
///   `DIR/{name}.{disk_format}` inside the operator's `multicloud.export_dir`, nowhere else.
struct MulticloudVIOResponder {
    let cache: ImageCache
    let uploads: UploadSettings
    let projects: TokenProjects
    let export: ExportDirectory?
    let logger: Logger

    typealias Route = Router.MulticloudVIO

    /// Exports running at once (each copies a whole image on a thread of its own).
    static let exportSlots = ConcurrencyLimit(2)

    func respond(_ request: Request, _ response: ResponseWriter, route: Route) async {
        let (cloud, tenant): (String, String)
        switch route {
        case let .upload(vimid, project), let .file(vimid, project, _): (cloud, tenant) = (vimid, project)
        }
        switch (route, request.method) {
        case (.upload, .POST):
            guard await tenantMatches(request, response, cloud: cloud, tenant: tenant) else { return }
            await MulticloudResponder(cache: cache, uploads: uploads, logger: logger).upload(request, response, cloud: cloud, onapTenant: tenant)
        case let (.file(_, _, imageID), .GET), let (.file(_, _, imageID), .HEAD):
            guard await tenantMatches(request, response, cloud: cloud, tenant: tenant) else { return }
            await ImageFileResponder(cache: cache, logger: logger).respond(request, response, cloud: cloud, imageID: imageID)
        case let (.file(_, _, imageID), .POST):
            await exportImage(request, response, cloud: cloud, tenant: tenant, imageID: imageID)
        default:
            await response.sendError(
                .methodNotAllowed, "\(request.method.rawValue) is not allowed here; images/file takes POST, images/file/{id} GET, HEAD and POST",
                headers: ["connection": "close"])
        }
    }

    /// Whether the caller's token is scoped to `tenant`; sends the refusal when not.
    func tenantMatches(_ request: Request, _ response: ResponseWriter, cloud: String, tenant: String) async -> Bool {
        guard let token = request.authToken, !token.isEmpty else {
            await response.sendError(.unauthorized, "send an X-Auth-Token of the cloud \(cloud), scoped to the project \(tenant)", headers: ["connection": "close"])
            return false
        }
        do {
            let project = try await projects.project(of: token, cloud: cloud, client: try cache.client(for: cloud))
            guard project.id == tenant else {
                await response.sendError(
                    .forbidden, "the token is scoped to the project \(project.id)\(project.name.map { " (\($0))" } ?? ""), not to the tenant \(tenant) in the path; use that project's id or a token of \(tenant)",
                    headers: ["connection": "close"])
                return false
            }
            return true
        } catch let refusal as TokenProjects.Refusal {
            await response.sendError(refusal, headers: ["connection": "close"])
        } catch {
            await response.sendError(.notFound, "\(error)", headers: ["connection": "close"])
        }
        return false
    }

    // MARK: Export

    /// `POST …/images/file/{id}` with `{"imagePath": DIR}`: the image, from the cache (filled
    /// first if needed, with the caller's authorization), written into the export directory.
    func exportImage(_ request: Request, _ response: ResponseWriter, cloud: String, tenant: String, imageID: String) async {
        guard let export else {
            await response.sendError(
                .forbidden, "writing images to a server-side imagePath is off here: the operator turns it on with multicloud.export_dir in Depot's config file (the directory every imagePath must lie in)",
                headers: ["connection": "close"])
            return
        }
        guard await tenantMatches(request, response, cloud: cloud, tenant: tenant) else { return }
        guard await response.continueIfExpected(request) else { return }
        var body: [UInt8] = []
        do {
            while let chunk = try await request.body.next() {
                body += chunk.readableBytesView
                guard body.count <= 64 << 10 else {
                    await response.sendError(.payloadTooLarge, "send a small JSON document: {\"imagePath\": \"DIR\"}", headers: ["connection": "close"])
                    return
                }
            }
        } catch {
            response.abort()
            return
        }
        guard let document = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any], let requested = document["imagePath"] as? String else {
            await response.sendError(.badRequest, "send a JSON document {\"imagePath\": \"DIR\"}, DIR a directory inside \(export.path)")
            return
        }
        // Refused before anything is fetched.
        do { _ = try export.components(of: requested) } catch {
            await response.sendError(.badRequest, error.description)
            return
        }
        let reader: BlobReader, image: GlanceImage
        do {
            (reader, image) = try await cachedImage(request, cloud: cloud, imageID: imageID)
        } catch let error as CacheError {
            await ImageFileResponder(cache: cache, logger: logger).sendCacheError(error, response)
            return
        } catch {
            await response.sendError(.internalServerError, "cannot read the cached image: \(error)")
            return
        }
        cache.beginRead(reader.digest)
        defer { cache.endRead(reader.digest) }
        guard Self.exportSlots.tryAcquire() else {
            await response.sendError(.serviceUnavailable, "\(Self.exportSlots.limit) exports are running; retry later", headers: ["retry-after": "5"])
            return
        }
        defer { Self.exportSlots.release() }
        let name = ExportDirectory.fileName(imageName: image.name, imageID: image.id, diskFormat: image["disk_format"]?.stringValue)
        let result: Result<String, ExportDirectory.Failure> = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { () throws(ExportDirectory.Failure) in try export.write(reader, to: requested, fileName: name) }) }.start()
        }
        switch result {
        case let .success(path):
            logger.info("image exported", metadata: ["cloud": "\(cloud)", "image": "\(imageID)", "path": "\(path)", "bytes": "\(reader.size)"])
            await response.sendJSON(.ok, ["status": "download OK", "path": path, "size": reader.size, "sha256": reader.digest.hex])
        case let .failure(.outside(message)), let .failure(.unusable(message)):
            await response.sendError(.badRequest, message)
        case let .failure(.io(message)):
            await response.sendError(.internalServerError, message)
        }
    }

    /// The image's committed blob, authorized with the caller's token; a miss is filled
    /// first and waited for.
    func cachedImage(_ request: Request, cloud: String, imageID: String) async throws -> (BlobReader, GlanceImage) {
        let authorized = try await cache.authorize(token: request.authToken, cloud: cloud, imageID: imageID)
        if let digest = try await cache.resolve(authorized) {
            return (try cache.store.open(digest), authorized.image)
        }
        let fill = try await cache.fill(authorized).fill
        var written: UInt64 = 0
        while true {
            let (now, outcome) = await fill.waitForBytes(beyond: written)
            switch outcome {
            case let .committed(blob)?: return (try cache.store.open(blob.digest), authorized.image)
            case let .failed(reason)?: throw CacheError.fillFailed(imageID: imageID, reason: reason)
            case nil: written = now
            }
        }
    }
}
