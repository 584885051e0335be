/// Inspects an image's bytes as they stream past, as Glance 33 does on upload, without keeping
/// the image: the format the data has, the virtual size it announces, and the outcome of the
/// format's safety checks.
///
/// Glance runs oslo.utils' format inspectors (`oslo_utils/imageutils/format_inspector.py`, 10.2)
/// over every upload of a `bare` image, in the 64 KiB chunks its file store reads, then one empty
/// read at the end; some inspectors decide what to read next only when a chunk ends. This type
/// reproduces that on Glance's chunk grid, whatever sizes the bytes arrive in, so the same
/// stream always gives the same `Inspection`. It keeps at most: the first 64 KiB, the VMDK
/// descriptor (under 1 MiB) and footer (1536 bytes), and VHDX's tables (3 × 64 KiB plus the
/// current chunk): memory does not grow with the image.
///
/// Feed the bytes with `feed`, then call `finish`; `Inspection.verdict` applies Glance's rules
/// for an image's `disk_format`. Pure: no I/O, no clock.
public struct FormatInspector: Sendable {
    /// Glance's file store reads uploads in chunks of this size (`filesystem_store_chunk_size`).
    public static let glanceChunkSize = 64 * 1024

    /// Bytes fed so far.
    public private(set) var length: UInt64 = 0
    /// Glance's first chunk.
    private var head: [UInt8] = []
    private var vmdk = VMDKInspector()
    private var vhdx: VHDXInspector?
    private var firstChunkEnded = false

    public init() {
        head.reserveCapacity(Self.glanceChunkSize)
    }

    /// Takes the next bytes of the stream.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let room = Self.glanceChunkSize - Int(length % UInt64(Self.glanceChunkSize))
            let count = min(room, bytes.count - offset)
            take(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]))
            offset += count
        }
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// Bytes of the stream the inspector holds (bounded whatever the stream's length).
    var retainedBytes: Int { head.count + vmdk.retainedBytes + (vhdx?.retainedBytes ?? 0) }

    /// Skips `count` bytes nobody wants (see `wantsBytes`), as if they had been fed.
    public mutating func skip(_ count: UInt64) {
        var left = count
        while left > 0 {
            let room = UInt64(Self.glanceChunkSize) - length % UInt64(Self.glanceChunkSize)
            let step = min(room, left)
            if length % UInt64(Self.glanceChunkSize) == 0 { beginChunk() }
            length += step
            left -= step
            if length % UInt64(Self.glanceChunkSize) == 0 { endChunk() }
        }
    }

    /// Whether any byte in `start..<end` matters, for a stream of `totalLength` bytes; lets a
    /// reader of a stored file skip the rest (`skip`).
    public func wantsBytes(from start: UInt64, to end: UInt64, totalLength: UInt64) -> Bool {
        if start < UInt64(Self.glanceChunkSize) { return true }
        if let vhdx, vhdx.wantsBytes { return true }
        if vmdk.wantsDescriptor(before: end) { return true }
        return vmdk.capturesTail && end + UInt64(VMDKInspector.footerLength) > totalLength
    }

    /// Bytes within one chunk of Glance's grid.
    private mutating func take(_ piece: UnsafeRawBufferPointer) {
        let start = length
        if start % UInt64(Self.glanceChunkSize) == 0 { beginChunk() }
        if start < UInt64(Self.glanceChunkSize) {
            head.append(contentsOf: piece)
        } else {
            vmdk.capture(piece, at: start)
            vhdx?.capture(piece, at: start)
        }
        length += UInt64(piece.count)
        if length % UInt64(Self.glanceChunkSize) == 0 { endChunk() }
    }

    private mutating func beginChunk() {
        vmdk.beginChunk(at: length)
        vhdx?.beginChunk(at: length)
    }

    /// What oslo.utils does once a chunk has been read.
    private mutating func endChunk() {
        if !firstChunkEnded && !head.isEmpty {
            firstChunkEnded = true
            vmdk.endFirstChunk(head)
            if head.hasBytes(Array("vhdxfile".utf8)) { vhdx = VHDXInspector() }
        }
        vhdx?.endChunk(length: length)
    }

    /// Ends the stream: the last partial chunk, then the empty read that ends Glance's loop.
    public consuming func finish() -> Inspection {
        if length % UInt64(Self.glanceChunkSize) != 0 { endChunk() }
        beginChunk()
        endChunk()
        let (vmdkFacts, undecidable) = vmdk.facts(head: head, length: length)
        var formats = HeaderFormats.all(head: head, length: length)
        formats.insert((vhdx ?? VHDXInspector()).facts(head: head, length: length), at: 2)
        formats.insert(vmdkFacts, at: 3)
        return Inspection(length: length, formats: formats, undecidable: undecidable)
    }
}

extension FormatInspector {
    /// Inspects `length` bytes that can be read at any offset (a stored blob), reading only
    /// the chunks the inspection wants: the first 64 KiB and the regions the headers name.
    ///
    /// - Parameter read: returns the bytes of a range within `0..<length`.
    public static func inspect<Failure: Error>(length: UInt64, read: (Range<UInt64>) throws(Failure) -> [UInt8]) throws(Failure) -> Inspection {
        var inspector = FormatInspector()
        var offset: UInt64 = 0
        while offset < length {
            let end = min(length, offset + UInt64(glanceChunkSize))
            if inspector.wantsBytes(from: offset, to: end, totalLength: length) {
                inspector.feed(try read(offset..<end))
            } else {
                inspector.skip(end - offset)
            }
            offset = end
        }
        return inspector.finish()
    }
}
