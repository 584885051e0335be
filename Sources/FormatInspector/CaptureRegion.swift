/// A region of the stream an inspector keeps, at a fixed offset and up to a fixed length, as
/// oslo.utils' `CaptureRegion` keeps it (`oslo_utils/imageutils/format_inspector.py`).
///
/// oslo.utils decides once per chunk whether and how a region takes that chunk, and Glance's
/// chunks are 64 KiB (`FormatInspector.glanceChunkSize`). A region that starts inside the chunk
/// takes the chunk from its offset; a region whose offset lies before the chunk but whose end
/// does not takes the whole chunk, aligned or not. The second rule only misaligns a region
/// created after the stream passed its offset (VHDX's metadata items can point backwards): the
/// data then differs from the file's bytes, and Glance's verdict with it, so Depot keeps the
/// same rule. `beginChunk` fixes the rule for a chunk; `capture` then takes the chunk's bytes
/// in pieces of any size with the result oslo.utils gets from the whole chunk.
struct CaptureRegion: Sendable, Equatable {
    let offset: UInt64
    /// Bytes wanted; VHDX shortens its metadata region once it found what it needs.
    var length: Int
    private(set) var data: [UInt8] = []
    /// Whether the region takes the current chunk at all (oslo: only while incomplete).
    private var taking = false
    /// Whether it takes the whole chunk from its start (offset at or before the chunk start).
    private var takesWholeChunk = false
    private var chunkStart: UInt64 = 0

    init(offset: UInt64, length: Int) {
        self.offset = offset
        self.length = max(0, length)
    }

    var complete: Bool { data.count == length }

    /// The region's end, saturated (offsets come from untrusted headers).
    var end: UInt64 { offset.addingReportingOverflow(UInt64(length)).overflow ? .max : offset + UInt64(length) }

    /// Fixes how the region takes the chunk that starts at `start`.
    mutating func beginChunk(at start: UInt64) {
        chunkStart = start
        taking = !complete
        takesWholeChunk = !(start < offset) && start <= end
    }

    /// Takes the part of `piece` (bytes of the current chunk starting at stream offset
    /// `start`) that oslo.utils would take; the whole piece when the region is behind.
    mutating func capture(_ piece: UnsafeRawBufferPointer, at start: UInt64) {
        guard taking, data.count < length, !piece.isEmpty else { return }
        let skip: Int
        if takesWholeChunk {
            skip = 0
        } else {
            guard chunkStart <= offset else { return }
            let pieceEnd = start + UInt64(piece.count)
            guard offset < pieceEnd else { return }
            skip = offset > start ? Int(offset - start) : 0
        }
        let take = min(piece.count - skip, length - data.count)
        guard take > 0 else { return }
        data.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[skip..<(skip + take)]))
    }

    /// Stops the region where it is (VHDX's metadata, once its item is found).
    mutating func truncateLength() { length = data.count }
}

/// The last `capacity` bytes of the stream (oslo.utils' `EndCaptureRegion`).
struct StreamTail: Sendable, Equatable {
    let capacity: Int
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { self.capacity = capacity }

    mutating func capture(_ piece: UnsafeRawBufferPointer) {
        if piece.count >= capacity {
            bytes = Array(UnsafeRawBufferPointer(rebasing: piece[(piece.count - capacity)...]))
            return
        }
        bytes.append(contentsOf: piece)
        if bytes.count > capacity { bytes.removeFirst(bytes.count - capacity) }
    }
}

/// Fixed-width integers in untrusted bytes; zero where the bytes run out (callers check
/// lengths first where oslo.utils would fail instead).
extension Array where Element == UInt8 {
    func littleEndian(_ offset: Int, _ width: Int) -> UInt64 {
        guard offset >= 0, offset + width <= count else { return 0 }
        var value: UInt64 = 0
        for i in stride(from: width - 1, through: 0, by: -1) { value = value << 8 | UInt64(self[offset + i]) }
        return value
    }

    func bigEndian(_ offset: Int, _ width: Int) -> UInt64 {
        guard offset >= 0, offset + width <= count else { return 0 }
        var value: UInt64 = 0
        for i in 0..<width { value = value << 8 | UInt64(self[offset + i]) }
        return value
    }

    func hasBytes(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
        guard offset >= 0, offset + prefix.count <= count else { return false }
        for i in 0..<prefix.count where self[offset + i] != prefix[i] { return false }
        return true
    }
}
