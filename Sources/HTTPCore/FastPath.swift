import NIOCore
import NIOHTTP1

/// A complete response known before its first byte is written: the head, bytes and zero-copy
/// file regions, the end. The fast path writes it on the event loop; `ResponseWriter.send(_:)`
/// writes it from a task (reading the regions into buffers under TLS).
public struct PlannedResponse {
    public let head: HTTPResponseHead
    /// The body's bytes and file regions, in order.
    public let body: [IOData]
    /// The descriptor the file regions read from; let go by `release()` once the last part is written.
    public let handle: NIOFileHandle?
    /// What owns `handle`'s descriptor when the response only borrows it (a kept blob
    /// reader): held until `release()`, so the descriptor stays open under the send.
    let descriptorOwner: (AnyObject & Sendable)?
    /// Where the body came from (`x-depot-cache`), for stats and the access log.
    public let cacheResult: String?

    /// - Parameter descriptorOwner: nil when `handle` owns its descriptor (closed by
    ///   `release()`); else the object that does, kept alive until `release()`.
    public init(head: HTTPResponseHead, body: [IOData], handle: NIOFileHandle?, descriptorOwner: (AnyObject & Sendable)? = nil, cacheResult: String?) {
        self.head = head
        self.body = body
        self.handle = handle
        self.descriptorOwner = descriptorOwner
        self.cacheResult = cacheResult
    }

    /// The response as the HTTP codec's parts: the head, each body part, the end. Made when
    /// asked for: `WireFastPath` writes `head` and `body` without them.
    public var parts: [HTTPServerResponsePart] {
        var parts: [HTTPServerResponsePart] = []
        parts.reserveCapacity(body.count + 2)
        parts.append(.head(head))
        for data in body { parts.append(.body(data)) }
        parts.append(.end(nil))
        return parts
    }

    /// Lets go of the descriptor once the last part is written (or the write failed): closes
    /// it when the response owns it, else hands it back to its owner, open.
    public func release() {
        guard let handle else { return }
        if descriptorOwner != nil {
            _ = try? handle.takeDescriptorOwnership()
            withExtendedLifetime(descriptorOwner) {}
        } else {
            try? handle.close()
        }
    }

    /// The status of the head.
    public var status: HTTPResponseStatus { head.status }

    /// Body bytes the parts send.
    public var bodyBytes: Int { body.reduce(0) { $0 + $1.readableBytes } }
}

/// Answers requests on the event loop, without a hop to Swift concurrency, when everything
/// needed is already in memory (a cache hit with a still-valid decision for the token).
public protocol FastPathResponder: Sendable {
    /// The complete response, or nil to let the async handler take the request.
    /// - Parameter memo: what the responder kept from this connection's earlier requests.
    func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse?
}

/// What a `FastPathResponder` keeps between the requests of one connection, such as work
/// derived from a header every request repeats; it ends with the connection. The connection's
/// handlers only carry it: what it holds is the responder's business.
public struct FastPathMemo {
    public var value: AnyObject?

    public init() {}
}

/// A response the fast path writes at once.
public struct ImmediateResponse {
    public let response: PlannedResponse
    /// Runs once the last part is written (or the write failed).
    public let completion: @Sendable () -> Void

    public init(_ response: PlannedResponse, completion: @escaping @Sendable () -> Void) {
        self.response = response
        self.completion = completion
    }
}

/// A planned response's file region ended before its planned end: the client must see a
/// broken transfer rather than wait.
public struct FileRegionShort: Error, CustomStringConvertible {
    public let expectedEnd: Int
    public let end: Int
    public var description: String { "the file ended at byte \(end), before the planned \(expectedEnd)" }
}
