import NIOCore
import NIOHTTP1

/// A complete response known before its first byte is written: the head, bytes and zero-copy
/// file regions, the end. The fast path writes it on the event loop; `ResponseWriter.send(_:)`
/// writes it from a task (reading the regions into buffers under TLS).
public struct PlannedResponse {
    public let parts: [HTTPServerResponsePart]
    /// The descriptor the file regions read from; closed once the last part is written.
    public let handle: NIOFileHandle?
    /// Where the body came from (`x-depot-cache`), for stats and the access log.
    public let cacheResult: String?

    /// - Precondition: `parts` starts with a head and ends with an end.
    public init(head: HTTPResponseHead, body: [IOData], handle: NIOFileHandle?, cacheResult: String?) {
        self.parts = [.head(head)] + body.map { .body($0) } + [.end(nil)]
        self.handle = handle
        self.cacheResult = cacheResult
    }

    /// The status of the head.
    public var status: HTTPResponseStatus {
        guard case let .head(head) = parts.first else { return .internalServerError }
        return head.status
    }

    /// Body bytes the parts send.
    public var bodyBytes: Int {
        parts.reduce(0) { total, part in
            guard case let .body(data) = part else { return total }
            return total + data.readableBytes
        }
    }
}

/// Answers requests on the event loop, without a hop to Swift concurrency, when everything
/// needed is already in memory (a cache hit with a still-valid decision for the token).
public protocol FastPathResponder: Sendable {
    /// The complete response, or nil to let the async handler take the request.
    func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator) -> ImmediateResponse?
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
