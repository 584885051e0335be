import Foundation
import Synchronization

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
        var produced: ProducedBody?
        switch body {
        case nil:
            break
        case let .bytes(bytes)?:
            request.body = .bytes(bytes)
        case let .file(path)?:
            throw .requestBody(reason: "forwarding a file body (\(path)) is not supported", url: url)
        case let .producer(length, produce)?:
            produced = ProducedBody(length: length, capacity: 1 << 20, produce: produce)
            request.body = produced!.body
        }

        let channel = ByteChannel(capacity: configuration.downloadBufferBytes)
        let consumer = DownloadConsumer(channel: channel)
        let opened = Mutex<CheckedContinuation<Result<HTTPResponseHead, GlanceError>, Never>?>(nil)
        // Outside the transfer's closure, which would otherwise hold the consumer strongly
        // (see `openDownload`).
        let consumerGone: @Sendable () -> Bool = { [weak consumer] in consumer == nil }
        let pool = self.pool, limits = self.limits
        let prepared = request, upload = produced
        let result: Result<HTTPResponseHead, GlanceError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                opened.withLock { $0 = continuation }
                TransferThreads.detach { [self] in
                    let handle = pool.take()
                    defer { pool.give(handle) }
                    let outcome: GlanceError?
                    do throws(TransportFailure) {
                        _ = try CurlTransfer.perform(
                            prepared, handle: handle, limits: limits, isCancelled: consumerGone,
                            streamAllStatuses: true,
                            onHead: { head in opened.withLock { $0.take() }?.resume(returning: .success(head)) },
                            onBody: { buffer in
                                guard channel.put(buffer) else { throw GlanceError.cancelled }
                            })
                        outcome = nil
                    } catch {
                        outcome = glanceError(error, method: method, url: url)
                    }
                    // The backend may answer before reading the whole body, so only the end of
                    // the transfer stops the producer, not the head.
                    upload?.stop()
                    if let outcome {
                        if let waiting = opened.withLock({ $0.take() }) {
                            waiting.resume(returning: .failure(outcome))
                        } else {
                            channel.finish(throwing: outcome)
                        }
                    } else {
                        channel.finish()
                    }
                }
            }
        } onCancel: {
            channel.cancelConsumer()
        }
        let head = try result.get()
        return ForwardedResponse(
            head: HTTPResponseHead(status: head.status, headers: head.headers.filter { !Self.hopByHopHeaders.contains($0.name.lowercased()) || $0.name.lowercased() == "content-length" }),
            body: ImageDownload(
                head: DownloadHead(status: head.status, length: nil, totalSize: nil, range: nil, contentMD5: nil, headers: head),
                consumer: consumer))
    }

    /// The backend's image endpoint: configured, or from the Keystone catalog.
    func resolveEndpoint() async throws(GlanceError) -> String {
        if let endpoint = configuration.endpoint { return endpoint }
        if let keystone, let endpoint = try await keystone.current(using: self).imageEndpoint { return endpoint }
        throw .authentication(reason: "no Glance endpoint configured and none found in the Keystone catalog")
    }
}
