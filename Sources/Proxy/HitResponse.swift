import BlobStore
import HTTPCore
import HTTPSemantics
import NIOCore
import NIOHTTP1

/// A complete answer from a committed blob. Carries out a `ResponsePlan` the same way on both
/// paths that serve hits: the event-loop fast path and the async handler.
typealias HitResponse = PlannedResponse

extension PlannedResponse {
    /// The plan's head, its literal parts as bytes and its representation ranges as zero-copy
    /// regions of the blob.
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
        self.init(head: head, body: body, handle: handle, cacheResult: "hit")
    }
}
