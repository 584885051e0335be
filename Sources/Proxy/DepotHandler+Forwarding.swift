import Cache
import Foundation
import Glance
import HTTPCore
import NIOCore
import NIOHTTP1

extension DepotHandler {
    // MARK: Import

    /// `POST /v2/images/{id}/import`: data staged through Depot is pushed to Glance's staging
    /// and imported there by the push queue; anything else goes to Glance as sent.
    func importImage(_ request: Request, _ response: ResponseWriter, cloud: String, imageID: String, pathAndQuery: String) async {
        var body: [UInt8] = []
        guard await response.continueIfExpected(request) else { return }
        do {
            while let chunk = try await request.body.next() {
                body += chunk.readableBytesView
                guard body.count <= 1 << 20 else {
                    await response.sendError(.payloadTooLarge, "an import request is a small JSON document", headers: ["connection": "close"])
                    return
                }
            }
        } catch {
            response.abort()
            return
        }
        let methodName = ((try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any])
            .flatMap { $0["method"] as? [String: Any] }.flatMap { $0["name"] as? String }
        if request.method == .POST, methodName == "glance-direct", cache.uploads.hasStaged(cloud: cloud, imageID: imageID) {
            // The caller must be allowed to import: Glance decides, with the caller's token,
            // on the same probe as uploads.
            do {
                _ = try await cache.uploads.authorizeImport(token: request.authToken, cloud: cloud, imageID: imageID)
                _ = try await cache.uploads.importStaged(cloud: cloud, imageID: imageID)
                await response.send(.accepted, headers: ["content-type": "text/html; charset=UTF-8"], body: response.allocator.buffer(string: ""))
            } catch let error as UploadError {
                if case .refused = error { await response.sendError(error) } else { await response.sendError(.badRequest, error.description) }
            } catch {
                await response.sendError(.serviceUnavailable, "\(error)")
            }
            return
        }
        await forward(request, response, cloud: cloud, pathAndQuery: pathAndQuery, bodyBytes: body)
    }

    // MARK: Forwarding

    /// Passes a request to the backend unchanged (headers, token, body streamed) and its answer
    /// back unchanged. A delete or deactivation seen on the way drops the image from the cache.
    func forward(_ request: Request, _ response: ResponseWriter, cloud: String, pathAndQuery: String, bodyBytes: [UInt8]? = nil) async {
        let client: GlanceClient
        do { client = try cache.client(for: cloud) } catch {
            await response.sendError(.notFound, "\(error)")
            return
        }
        // libcurl negotiates its own 100-continue with the backend.
        var headers = request.headers.filter { $0.name.lowercased() != "expect" }.map { ($0.name, $0.value) }
        if carriesAdminTokenToSchemas(request, pathAndQuery: pathAndQuery) {
            // Schemas are the same for every caller, and glanceclient fetches them before any
            // command (`glance --os-auth-token ADMIN_TOKEN cache-list`); Glance does not know
            // Depot's admin token, so Depot's own credentials ask for them.
            headers.removeAll { $0.0.lowercased() == "x-auth-token" }
            do {
                if let token = try await client.serviceToken() { headers.append(("X-Auth-Token", token)) }
            } catch {
                await response.sendError(.serviceUnavailable, "cannot get Depot's service token for cloud \(cloud) (\(error)); retry later")
                return
            }
        }
        let imageRequest = Self.imageRequest(method: request.method, pathAndQuery: pathAndQuery)
        guard await landOwedBytes(imageRequest, cloud: cloud, response: response) else { return }
        var body: UploadSource?
        if let bodyBytes {
            body = .bytes(bodyBytes)
        } else if !request.body.isEmpty {
            guard await response.continueIfExpected(request) else { return }
            let requestBody = request.body
            body = .producer(length: requestBody.declaredLength) { emit in
                while let chunk = try await requestBody.next() {
                    guard await emit(Array(chunk.readableBytesView)) else { return }
                }
            }
        }
        var answer: ForwardedResponse
        var askedAt = ContinuousClock.now
        do {
            answer = try await client.forward(method: request.method.rawValue, pathAndQuery: pathAndQuery, headers: headers, body: body)
        } catch {
            logger.warning("backend unreachable", metadata: ["cloud": "\(cloud)", "error": "\(error)"])
            await response.sendError(.serviceUnavailable, "the image service of cloud \(cloud) is unreachable (\(error)); retry later")
            return
        }
        await noteChanges(method: request.method, pathAndQuery: pathAndQuery, status: answer.head.status, cloud: cloud)
        do {
            var rewritten = try await acknowledgedBody(imageRequest, cloud: cloud, pathAndQuery: pathAndQuery, headers: headers, answer: answer)
            var rereads = 0
            while rewritten != nil, rereads < ImageCache.maximumRereadsForLandings, cache.pushLanded(cloud: cloud, since: askedAt) {
                // A show or a list Glance answered before a push of Depot's landed may show
                // that image without its data, and Depot may have let the blob (and with it
                // its memory of owing the bytes) go since: ask again. Both are GETs.
                rereads += 1
                askedAt = ContinuousClock.now
                do {
                    answer = try await client.forward(method: request.method.rawValue, pathAndQuery: pathAndQuery, headers: headers, body: nil)
                } catch {
                    await response.sendError(.serviceUnavailable, "the image service of cloud \(cloud) is unreachable (\(error)); retry later")
                    return
                }
                rewritten = try await acknowledgedBody(imageRequest, cloud: cloud, pathAndQuery: pathAndQuery, headers: headers, answer: answer)
            }
            var headersOut = HTTPHeaders(answer.head.headers.map { ($0.name, $0.value) })
            if request.method == .HEAD { headersOut.remove(name: "transfer-encoding") }
            if let rewritten {
                headersOut.remove(name: "transfer-encoding")
                headersOut.replaceOrAdd(name: "content-length", value: String(rewritten.count))
                try await response.head(HTTPResponseStatus(statusCode: answer.head.status), headersOut)
                try await response.body(response.allocator.buffer(bytes: rewritten))
                try await response.end()
                return
            }
            try await response.head(HTTPResponseStatus(statusCode: answer.head.status), headersOut)
            for try await chunk in answer.body {
                try await response.body(response.allocator.buffer(bytes: chunk))
            }
            try await response.end()
        } catch {
            response.abort()
        }
    }

    /// Whether a request for Glance's schemas (`/v2/schemas…`) carries Depot's own admin token.
    func carriesAdminTokenToSchemas(_ request: Request, pathAndQuery: String) -> Bool {
        let path = Router.pathPart(Substring(pathAndQuery))
        guard path == "/v2/schemas" || path.hasPrefix("/v2/schemas/"), let adminToken = admin.token, !adminToken.isEmpty,
              let token = request.authToken
        else { return false }
        return AdminResponder.constantTimeEquals(token, adminToken)
    }

    /// Drops cached knowledge of an image that Glance just deleted or deactivated.
    func noteChanges(method: HTTPMethod, pathAndQuery: String, status: Int, cloud: String) async {
        guard (200..<300).contains(status) else { return }
        let path = pathAndQuery.split(separator: "?").first ?? ""
        let segments = path.split(separator: "/")
        // /v2/images/{id}  or  /v2/images/{id}/actions/deactivate
        if method == .DELETE, segments.count == 3, segments[1] == "images" {
            await cache.cancelOwedBytes(cloud: cloud, imageID: String(segments[2]))
            await cache.forget(cloud: cloud, imageID: String(segments[2]))
        } else if method == .POST, segments.count == 5, segments[1] == "images", segments[3] == "actions", segments[4] == "deactivate" {
            await cache.forget(cloud: cloud, imageID: String(segments[2]))
        }
    }
}
