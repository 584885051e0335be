import Foundation

/// A backend answer being passed through: its head, and its body as a stream of chunks.
public struct ForwardedResponse: Sendable {
    public let head: HTTPResponseHead
    public let body: ImageDownload
}

extension GlanceClient {
    /// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1), plus
    /// those libcurl computes itself.
    public static let hopByHopHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization", "host", "content-length", "expect",
    ]

    /// Sends a request to the backend exactly as a client made it (its own headers and token)
    /// and streams the answer back whatever its status. Never retried: the caller decides.
    ///
    /// - Parameters:
    ///   - pathAndQuery: e.g. `/v2/images?limit=5`; must start with `/`.
    ///   - headers: the client's headers; hop-by-hop ones are dropped.
    ///   - body: the request body, if any.
    public func forward(
        method: String, pathAndQuery: String, headers: [(String, String)], body: UploadSource?
    ) async throws(GlanceError) -> ForwardedResponse {
        let endpoint = try await resolveEndpoint()
        let url = endpoint + pathAndQuery
        var request = HTTPRequest(method: method, url: url)
        request.headers = headers.filter { !Self.hopByHopHeaders.contains($0.0.lowercased()) }
        var produce: UploadProducer?
        if let body {
            if case let .file(path) = body { throw .requestBody(reason: "forwarding a file body (\(path)) is not supported", url: url) }
            produce = try Self.attach(body, to: &request)
        }
        let transfer = transfers.start(request, limits: limits, handling: .stream(allStatuses: true), responseBuffer: configuration.downloadBufferBytes)
        // The backend may answer before reading the whole body: only the end of the exchange
        // stops the producer, not the head.
        if let produce { transfer.feedRequestBody(produce) }
        let head: HTTPResponseHead
        switch await transfer.opened() {
        case let .streaming(streamed): head = streamed
        case let .complete(complete, _): head = complete  // never: every status streams
        case let .failed(failure): throw glanceError(failure, method: method, url: url)
        }
        let forwarded = head.headers.filter { !Self.hopByHopHeaders.contains($0.name.lowercased()) || $0.name.lowercased() == "content-length" }
        return ForwardedResponse(
            head: HTTPResponseHead(status: head.status, headers: forwarded),
            body: ImageDownload(
                head: DownloadHead(status: head.status, length: nil, totalSize: nil, range: nil, contentMD5: nil, headers: head),
                body: DownloadBody(transfer: transfer, method: method, url: url)))
    }

    /// The backend's image endpoint: configured, or from the Keystone catalog.
    func resolveEndpoint() async throws(GlanceError) -> String {
        if let endpoint = configuration.endpoint { return endpoint }
        if let keystone, let endpoint = try await keystone.current(using: self).imageEndpoint { return endpoint }
        throw .authentication(reason: "no Glance endpoint configured and none found in the Keystone catalog")
    }
}
