import NIOCore
import NIOHTTP1

/// A complete response known before its first byte is written: the head, bytes and zero-copy
/// file regions, the end. The fast path writes it on the event loop; `ResponseWriter.send(_:)`
/// writes it from a task (reading the regions into buffers under TLS).
public struct PlannedResponse {
    /// The head as NIO's model. A response planned with its head in wire form
    /// (`encodedHead`) makes it from those bytes when asked: only the codec's and the async
    /// paths ask, so a hit answered from the wire never builds it.
    public var head: HTTPResponseHead { modelHead ?? Self.decodeHead(encodedHead!, version: version, status: status) }
    private let modelHead: HTTPResponseHead?
    /// The head's bytes as NIO's `HTTPResponseEncoder` would write them, when the responder
    /// wrote them itself: status line, fields, empty line, with the framing already right
    /// (a `Content-Length`, or no body by status).
    public let encodedHead: ByteBuffer?
    /// The status of the head.
    public let status: HTTPResponseStatus
    private let version: HTTPVersion
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
        self.modelHead = head
        self.encodedHead = nil
        self.status = head.status
        self.version = head.version
        self.body = body
        self.handle = handle
        self.descriptorOwner = descriptorOwner
        self.cacheResult = cacheResult
    }

    /// A response whose head the responder wrote in wire form: building NIO's head model
    /// (`HTTPHeaders`, `HTTPResponseHead`) and encoding it again cost about 7,000 instructions
    /// of a 4 KiB range hit. `encodedHead` must be what `HTTPResponseEncoder` writes for a
    /// head of `version` and `status` (Proxy's `ByteBuffer.writeHead(of:version:status:cacheResult:representationFields:)`
    /// writes it so), and must not need chunked framing.
    public init(
        encodedHead: ByteBuffer, version: HTTPVersion, status: HTTPResponseStatus, body: [IOData], handle: NIOFileHandle?,
        descriptorOwner: (AnyObject & Sendable)? = nil, cacheResult: String?
    ) {
        self.modelHead = nil
        self.encodedHead = encodedHead
        self.status = status
        self.version = version
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
    public func release() { releaser.release() }

    /// What `release()` lets go of, kept apart from the rest of the response: the fast path
    /// holds this alone until the response has left.
    var releaser: Releaser { Releaser(handle: handle, descriptorOwner: descriptorOwner) }

    /// A response's descriptor and its owner (see `release()`).
    struct Releaser {
        private(set) var handle: NIOFileHandle?
        let descriptorOwner: (AnyObject & Sendable)?

        /// Whether this releaser is all that holds the response's file handle: every file
        /// region of a response holds it, and NIO lets go of a region once all its bytes are
        /// written or its write failed. False without a handle.
        mutating func holdsHandleAlone() -> Bool {
            handle != nil && isKnownUniquelyReferenced(&handle)
        }

        func release() {
            guard let handle else { return }
            if descriptorOwner != nil {
                _ = try? handle.takeDescriptorOwnership()
                withExtendedLifetime(descriptorOwner) {}
            } else {
                try? handle.close()
            }
        }
    }

    /// The model of a head in wire form: the fields of each line after the status line, up to
    /// the empty one (each `name: value`, as `ByteBuffer.copyField` writes them).
    private static func decodeHead(_ bytes: ByteBuffer, version: HTTPVersion, status: HTTPResponseStatus) -> HTTPResponseHead {
        let text = String(buffer: bytes)
        var fields: [(String, String)] = []
        // "\r\n" is one Character in Swift.
        for line in text.split(separator: "\r\n" as Character).dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let value = line[line.index(after: colon)...]
            fields.append((String(line[..<colon]), String(value.first == " " ? value.dropFirst() : value)))
        }
        return HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(fields))
    }

    /// Body bytes the parts send.
    public var bodyBytes: Int { body.reduce(0) { $0 + $1.readableBytes } }
}

/// Answers requests on the event loop, without a hop to Swift concurrency, when everything
/// needed is already in memory (a cache hit with a still-valid decision for the token).
public protocol FastPathResponder: Sendable {
    /// The complete response, or nil to let the async handler take the request.
    /// - Parameter memo: what the responder kept from this connection's earlier requests.
    func immediateResponse(to head: HTTPRequestHead, allocator: ByteBufferAllocator, memo: inout FastPathMemo) -> ImmediateResponse?

    /// The response to a request whose head is, byte for byte, the head of the request
    /// `earlier` came with (`ImmediateResponse.repeatable`), but for the value of its first
    /// `Range` field; nil to have the request read and answered anew (`immediateResponse`).
    /// `WireFastPath` asks this instead of reading the head again: a client streaming an image
    /// (qemu's curl driver, a segmented download) repeats one head with another range.
    /// - Parameter range: that value's bytes as the request carried them (nil when the head
    ///   has no `Range` field), valid for the call only: a `String` of them cost more than
    ///   planning the range does.
    func repeatedResponse(to earlier: AnyObject, range: UnsafeRawBufferPointer?, allocator: ByteBufferAllocator) -> ImmediateResponse?
}

extension FastPathResponder {
    public func repeatedResponse(to earlier: AnyObject, range: UnsafeRawBufferPointer?, allocator: ByteBufferAllocator) -> ImmediateResponse? { nil }
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
    /// What the responder needs to answer the same request again for another range
    /// (`FastPathResponder.repeatedResponse`); nil: such a request is read anew.
    public let repeatable: AnyObject?

    public init(_ response: PlannedResponse, repeatable: AnyObject? = nil, completion: @escaping @Sendable () -> Void) {
        self.response = response
        self.repeatable = repeatable
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
