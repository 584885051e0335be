import BlobStore
import Foundation
import Glance
import HTTPSemantics
import NIOCore
import NIOHTTP1

/// A complete answer from a committed blob, as the parts to write: the head, then bytes and
/// zero-copy file regions, then the end.
///
/// Carries out a `ResponsePlan` the same way on both paths that serve hits: the event-loop
/// fast path and the async handler (which reads the regions into buffers under TLS).
struct HitResponse {
    let parts: [HTTPServerResponsePart]
    let plan: ResponsePlan
    /// The descriptor the file regions read from; close it once the last part is written.
    let handle: NIOFileHandle?

    /// The status of the planned head.
    var status: HTTPResponseStatus { HTTPResponseStatus(statusCode: plan.status) }

    /// Body bytes the parts send.
    var bodyBytes: Int {
        parts.reduce(0) { total, part in
            guard case let .body(data) = part else { return total }
            return total + data.readableBytes
        }
    }

    /// - Precondition: `reader` holds the representation the plan was made for (same size).
    init(plan: ResponsePlan, version: HTTPVersion, reader: BlobReader, allocator: ByteBufferAllocator) throws {
        var handle: NIOFileHandle?
        var body: [IOData] = []
        for segment in plan.body {
            switch segment {
            case let .literal(bytes):
                body.append(.byteBuffer(allocator.buffer(bytes: bytes)))
            case let .representation(range):
                if handle == nil { handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: try reader.duplicateDescriptor()) }
                body.append(.fileRegion(FileRegion(fileHandle: handle!, readerIndex: Int(range.lowerBound), endIndex: Int(range.upperBound) + 1)))
            }
        }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: plan.status), headers: plan.httpHeaders(cacheResult: "hit"))
        self.parts = [.head(head)] + body.map { .body($0) } + [.end(nil)]
        self.plan = plan
        self.handle = handle
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
    let hit: HitResponse
    /// Runs once the last part is written (or the write failed).
    let completion: @Sendable () -> Void
}
