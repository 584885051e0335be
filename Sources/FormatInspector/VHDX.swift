/// oslo.utils' `VHDXInspector` as Glance runs it: the region table at 192 KiB names the
/// metadata region, whose table names the "virtual disk size" item.
///
/// oslo.utils looks for the next region only when a chunk ends, and then offers that chunk to
/// the new region: the inspector keeps the current chunk (64 KiB) until the size item is found.
/// It runs only for streams that start with "vhdxfile": for any other stream nothing it could
/// find changes Glance's verdict.
struct VHDXInspector: Sendable, Equatable {
    static let metadataRegionGUID: [UInt8] = guid(0x8B7C_A206, 0x4790, 0x4B9A, [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E])
    static let virtualDiskSizeGUID: [UInt8] = guid(0x2FA5_4224, 0xCD1B, 0x4876, [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8])
    static let tableLength = 2048 * 32

    private var header = CaptureRegion(offset: 192 * 1024, length: 64 * 1024)
    private var metadata: CaptureRegion?
    private var size: CaptureRegion?
    /// The region table named no metadata region (oslo.utils asks again each chunk, in vain).
    private var noMetadataRegion = false
    /// Bytes given before oslo.utils dropped the inspector for a malformed table.
    private var rejectedAfter: UInt64?
    private var chunk: [UInt8] = []
    private var chunkStart: UInt64 = 0

    /// A Microsoft GUID's 16 bytes as stored (first three fields little-endian).
    static func guid(_ a: UInt32, _ b: UInt16, _ c: UInt16, _ rest: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: a.littleEndian, Array.init) + withUnsafeBytes(of: b.littleEndian, Array.init)
            + withUnsafeBytes(of: c.littleEndian, Array.init) + rest
    }

    var retainedBytes: Int { header.data.count + (metadata?.data.count ?? 0) + (size?.data.count ?? 0) + chunk.count }

    /// Whether the inspector still wants bytes of the stream (file inspection skips the rest).
    var wantsBytes: Bool { rejectedAfter == nil && !(size?.complete ?? false) && !noMetadataRegion }

    /// Whether a region may be created when the current chunk ends, so the chunk is kept.
    private var keepsChunk: Bool {
        rejectedAfter == nil && size == nil && !noMetadataRegion && (metadata != nil || chunkStart + UInt64(FormatInspector.glanceChunkSize) >= header.end)
    }

    mutating func beginChunk(at start: UInt64) {
        chunkStart = start
        chunk.removeAll(keepingCapacity: true)
        header.beginChunk(at: start)
        metadata?.beginChunk(at: start)
        size?.beginChunk(at: start)
    }

    mutating func capture(_ piece: UnsafeRawBufferPointer, at start: UInt64) {
        guard rejectedAfter == nil else { return }
        header.capture(piece, at: start)
        metadata?.capture(piece, at: start)
        size?.capture(piece, at: start)
        if keepsChunk { chunk.append(contentsOf: piece) }
    }

    /// oslo.utils' post-processing when a chunk ends (`length`: bytes so far).
    mutating func endChunk(length: UInt64) {
        guard rejectedAfter == nil else { return }
        do {
            if header.complete, metadata == nil {
                guard !noMetadataRegion else { return }
                guard var region = try findMetadataRegion() else {
                    noMetadataRegion = true
                    return
                }
                offerChunk(to: &region)
                metadata = region
            } else if metadata != nil, size == nil, var region = try findSizeItem() {
                offerChunk(to: &region)
                size = region
            }
        } catch {
            rejectedAfter = length
        }
    }

    private func offerChunk(to region: inout CaptureRegion) {
        region.beginChunk(at: chunkStart)
        chunk.withUnsafeBytes { region.capture($0, at: chunkStart) }
    }

    struct Malformed: Error {}

    /// The region table: "regi", an entry count, 32-byte entries of GUID and file offset.
    private func findMetadataRegion() throws(Malformed) -> CaptureRegion? {
        let table = header.data
        guard table.littleEndian(0, 4) == 0x6967_6572 else { throw Malformed() }
        let count = table.littleEndian(8, 4)
        guard count < 2048 else { throw Malformed() }
        for i in 0..<Int(count) {
            let start = 16 + i * 32
            guard Array(table[start..<(start + 16)]) == Self.metadataRegionGUID else { continue }
            // The last entry runs past the captured table: oslo.utils' unpack fails.
            guard start + 32 <= table.count else { throw Malformed() }
            return CaptureRegion(offset: table.littleEndian(start + 16, 8), length: Self.tableLength)
        }
        return nil
    }

    /// The metadata table: "metadata", an entry count, 32-byte entries of GUID, offset (from
    /// the region's start) and length.
    private mutating func findSizeItem() throws(Malformed) -> CaptureRegion? {
        guard var region = metadata else { return nil }
        let table = region.data
        guard table.count >= 32 else { return nil }
        guard table.hasBytes(Array("metadata".utf8)) else { throw Malformed() }
        let count = Int(table.littleEndian(10, 2))
        guard table.count >= 32 + count * 32 else { return nil }
        for i in 0..<count {
            let entry = 32 + i * 32
            guard Array(table[entry..<(entry + 16)]) == Self.virtualDiskSizeGUID else { continue }
            let itemOffset = table.littleEndian(entry + 16, 4)
            let itemLength = min(Int(table.littleEndian(entry + 20, 4)), Self.tableLength)
            region.truncateLength()
            metadata = region
            let (offset, overflow) = region.offset.addingReportingOverflow(itemOffset)
            return CaptureRegion(offset: overflow ? .max : offset, length: itemLength)
        }
        return nil
    }

    func facts(head: [UInt8], length: UInt64) -> FormatFacts {
        let complete = head.count >= 32 && header.complete && (metadata?.complete ?? true) && (size?.complete ?? true)
        var virtualSize: Int64? = 0
        if let size, size.complete {
            // oslo.utils unpacks exactly eight bytes; an item of another length raises.
            virtualSize = size.data.count == 8 ? HeaderFormats.pythonInt(size.data.littleEndian(0, 8)) : nil
        }
        return FormatFacts(
            format: "vhdx", matches: head.hasBytes(Array("vhdxfile".utf8)), complete: complete, virtualSize: virtualSize,
            actualSize: Int64(clamping: rejectedAfter ?? length))
    }
}
