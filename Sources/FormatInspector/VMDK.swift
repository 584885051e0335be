/// oslo.utils' `VMDKInspector` as Glance runs it.
///
/// A VMDK is either a sparse extent ("KDMV" header, an embedded text descriptor at sector 1,
/// for streamOptimized a footer in the last 1536 bytes) or a bare text descriptor. oslo.utils
/// decides which at the end of Glance's first chunk: a first sector of printable ASCII is read
/// as a descriptor, whose text is the whole first chunk. Only `monolithicSparse` and
/// `streamOptimized` pass, and only with extents that name no path.
struct VMDKInspector: Sendable, Equatable {
    static let descriptorOffset: UInt64 = 0x200
    static let descriptorMaximum = (1 << 20) - 1
    static let footerLength = 1536
    static let grainDirectoryAtEnd = UInt64.max

    enum Shape: Sendable, Equatable {
        /// Fewer than 64 bytes in the first chunk: the header never completes.
        case shortHeader
        /// The first sector is text: it is a descriptor file.
        case text
        /// A KDMV header oslo.utils rejected while reading the first chunk; it read no more.
        case rejected(footer: Bool)
        /// A sparse extent whose descriptor (and footer) are being captured.
        case sparse
    }

    private(set) var shape: Shape = .shortHeader
    private var descriptor: CaptureRegion?
    private var footer: StreamTail?
    /// Bytes oslo.utils gave the inspector (a rejected one gets no more after the first chunk).
    private var rejectedAfter: UInt64?

    var retainedBytes: Int { (descriptor?.data.count ?? 0) + (footer?.bytes.count ?? 0) }

    /// Whether bytes after the first chunk still matter (the descriptor or the footer).
    var wantsMoreBytes: Bool { shape == .sparse }
    /// Whether the footer (the stream's last 1536 bytes) is captured.
    var capturesTail: Bool { shape == .sparse && footer != nil }
    /// Whether the descriptor still takes bytes at or after `offset`.
    func wantsDescriptor(before end: UInt64) -> Bool {
        guard let descriptor, !descriptor.complete else { return false }
        return end > descriptor.offset + UInt64(descriptor.data.count)
    }

    /// oslo.utils' post-processing of the first chunk (`head`, all of it).
    mutating func endFirstChunk(_ head: [UInt8]) {
        guard head.count >= 64 else { return }
        let header = Array(head.prefix(512))
        let fields = SparseHeader(header)
        guard fields.signature == Array("KDMV".utf8) else {
            if Self.isText(header) {
                shape = .text
            } else {
                shape = .rejected(footer: false)
                rejectedAfter = UInt64(head.count)
            }
            return
        }
        guard (1...3).contains(fields.version) else {
            shape = .rejected(footer: false)
            rejectedAfter = UInt64(head.count)
            return
        }
        if fields.grainDirectoryOffset == Self.grainDirectoryAtEnd { footer = StreamTail(capacity: Self.footerLength) }
        guard fields.descriptorSector == 1 else {
            // The footer region was added before the check failed, and never got a byte.
            shape = .rejected(footer: footer != nil)
            footer = nil
            rejectedAfter = UInt64(head.count)
            return
        }
        let (bytes, overflow) = fields.descriptorSectors.multipliedReportingOverflow(by: 512)
        var region = CaptureRegion(offset: Self.descriptorOffset, length: overflow ? Self.descriptorMaximum : Int(min(bytes, UInt64(Self.descriptorMaximum))))
        shape = .sparse
        head.withUnsafeBytes { chunk in
            region.beginChunk(at: 0)
            region.capture(chunk, at: 0)
            footer?.capture(chunk)
        }
        descriptor = region
    }

    mutating func beginChunk(at start: UInt64) {
        descriptor?.beginChunk(at: start)
    }

    /// Bytes after the first chunk.
    mutating func capture(_ piece: UnsafeRawBufferPointer, at start: UInt64) {
        guard shape == .sparse else { return }
        descriptor?.capture(piece, at: start)
        footer?.capture(piece)
    }

    // MARK: The stream has ended

    func facts(head: [UInt8], length: UInt64) -> (facts: FormatFacts, undecidable: Bool) {
        let header = Array(head.prefix(512))
        var descriptorText: [UInt8]?
        var matches: Bool
        var complete: Bool
        var footerCheck = false
        switch shape {
        case .shortHeader:
            matches = header.hasBytes(Array("KDMV".utf8))
            complete = false
            if head.count >= 4 { descriptorText = Self.descriptorText(head) }
        case .text:
            descriptorText = Self.descriptorText(head)
            guard let text = descriptorText else {
                return (FormatFacts(format: "vmdk", matches: false, complete: true, virtualSize: 0, actualSize: Int64(clamping: length)), true)
            }
            matches = Self.createType(text) != Self.formatNotFound
            complete = true
        case let .rejected(footer):
            matches = header.hasBytes(Array("KDMV".utf8))
            complete = !footer
            footerCheck = footer
        case .sparse:
            matches = true
            complete = descriptor?.complete == true && (footer.map { $0.bytes.count == Self.footerLength } ?? true)
            if let descriptor, descriptor.complete { descriptorText = Self.descriptorText(descriptor.data) }
            footerCheck = footer != nil
        }
        var failures: [SafetyFailure] = []
        if complete {
            if let reason = Self.descriptorFailure(descriptorText) { failures.append(SafetyFailure(check: "descriptor", reason: reason)) }
            if footerCheck, let footer, let reason = Self.footerFailure(header: header, footer: footer.bytes) {
                failures.append(SafetyFailure(check: "footer", reason: reason))
            }
        }
        let facts = FormatFacts(
            format: "vmdk", matches: matches, complete: complete, virtualSize: virtualSize(descriptorText, header: header),
            actualSize: Int64(clamping: rejectedAfter ?? length), failedChecks: failures)
        return (facts, false)
    }

    /// oslo.utils' `virtual_size`: the header's sector count, for sparse subformats only.
    private func virtualSize(_ text: [UInt8]?, header: [UInt8]) -> Int64? {
        guard let text, !text.isEmpty, Self.sparseTypes.contains(Self.createType(text)) else { return 0 }
        // A text descriptor has no header to read (oslo.utils raises), nor has a short one.
        guard shape != .text, header.count >= 44 else { return nil }
        return HeaderFormats.pythonInt(header.littleEndian(12, 8)).flatMap { $0.multipliedReportingOverflow(by: 512).overflow ? nil : $0 * 512 }
    }

    // MARK: Descriptor text

    static let formatNotFound = Array("formatnotfound".utf8)
    static let sparseTypes = [Array("monolithicsparse".utf8), Array("streamoptimized".utf8)]

    /// The descriptor as lowercased ASCII, cut at the first NUL; nil when it is not ASCII.
    static func descriptorText(_ data: [UInt8]) -> [UInt8]? {
        let text = data.firstIndex(of: 0).map { Array(data[..<$0]) } ?? data
        guard text.allSatisfy({ $0 < 0x80 }) else { return nil }
        return text.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }
    }

    /// The value of `createType="…"`, as oslo.utils slices it (to the end less one character
    /// when the quote is not closed), or "formatnotfound".
    static func createType(_ text: [UInt8]) -> [UInt8] {
        let key = Array("createtype=\"".utf8)
        guard let found = text.firstRange(of: key) else { return formatNotFound }
        let start = found.upperBound
        let end = text[start...].firstIndex(of: UInt8(ascii: "\"")) ?? (text.count - 1)
        if let close = text[start...].firstIndex(of: UInt8(ascii: "\"")), close - start >= 64 { return formatNotFound }
        return start < end ? Array(text[start..<end]) : []
    }

    /// oslo.utils' `check_descriptor`: every line must be a comment, a ddb entry, a header field
    /// or an extent; extents must not name a path; there must be one.
    static func descriptorFailure(_ text: [UInt8]?) -> String? {
        guard let text, !text.isEmpty else { return "No descriptor found" }
        guard sparseTypes.contains(createType(text)) else { return "Unsupported subformat" }
        var extents: [ArraySlice<UInt8>] = []
        for raw in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            let line = strip(raw)
            if line.isEmpty || line.first == UInt8(ascii: "#") || line.starts(with: Array("ddb".utf8)) { continue }
            let key = line.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)[0]
            if line.contains(UInt8(ascii: "=")) && !key.contains(UInt8(ascii: " ")) { continue }
            let access = line.split(separator: UInt8(ascii: " "), maxSplits: 1, omittingEmptySubsequences: false)[0]
            guard ["rw", "rdonly", "noaccess"].contains(where: { access.elementsEqual($0.utf8) }) else { return "Invalid VMDK descriptor data" }
            extents.append(line)
        }
        if extents.contains(where: { $0.contains(UInt8(ascii: "/")) }) { return "Invalid extent filenames found" }
        return extents.isEmpty ? "No extents found" : nil
    }

    /// Python's `str.strip()` on ASCII: whitespace includes the separators 0x1C-0x1F.
    static func strip(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var line = line
        while let first = line.first, isSpace(first) { line.removeFirst() }
        while let last = line.last, isSpace(last) { line.removeLast() }
        return line
    }

    static func isSpace(_ byte: UInt8) -> Bool { (0x09...0x0D).contains(byte) || (0x1C...0x20).contains(byte) }

    /// Python's `isprintable() or isspace()` for every byte, after an ASCII decode.
    static func isText(_ bytes: [UInt8]) -> Bool {
        bytes.allSatisfy { (0x20...0x7E).contains($0) || isSpace($0) }
    }

    // MARK: streamOptimized footer

    /// oslo.utils' `check_footer`: the footer repeats the header and is framed by a footer
    /// marker and an end-of-stream marker.
    static func footerFailure(header: [UInt8], footer: [UInt8]) -> String? {
        let h = SparseHeader(header)
        let f = SparseHeader(Array(footer[512..<576]))
        if h.signature != f.signature { return "Header and footer signature do not match" }
        if h.version != f.version { return "Header and footer versions do not match" }
        if h.descriptorSector != f.descriptorSector || h.descriptorSectors != f.descriptorSectors {
            return "Footer specifies a different descriptor than header"
        }
        if f.grainDirectoryOffset == grainDirectoryAtEnd { return "Footer indicates another footer" }
        func marker(_ bytes: ArraySlice<UInt8>) -> (value: UInt64, size: UInt64, type: UInt64, padded: Bool) {
            let b = Array(bytes)
            return (b.littleEndian(0, 8), b.littleEndian(8, 4), b.littleEndian(12, 4), b[16...].allSatisfy { $0 == 0 })
        }
        let footerMarker = marker(footer[0..<512])
        if footerMarker.size != 0 || footerMarker.type != 3 || !footerMarker.padded { return "Footer marker is invalid" }
        let end = marker(footer[1024..<1536])
        if end.value != 0 || end.size != 0 || end.type != 0 || !end.padded { return "End-of-stream marker is invalid" }
        return nil
    }
}

/// The fields of a hosted sparse extent header oslo.utils reads (little-endian, 64 bytes).
struct SparseHeader {
    let signature: [UInt8]
    let version: UInt64
    let descriptorSector: UInt64
    let descriptorSectors: UInt64
    let grainDirectoryOffset: UInt64

    init(_ bytes: [UInt8]) {
        signature = Array(bytes.prefix(4))
        version = bytes.littleEndian(4, 4)
        descriptorSector = bytes.littleEndian(28, 8)
        descriptorSectors = bytes.littleEndian(36, 8)
        grainDirectoryOffset = bytes.littleEndian(56, 8)
    }
}
