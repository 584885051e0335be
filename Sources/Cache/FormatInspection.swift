/// The image-format check Glance applies to uploads, done by Depot before it acknowledges.
///
/// Glance inspects the data of `bare` images while it receives it and refuses a body whose
/// format differs from the declared `disk_format` (415) or that fails a safety check, such
/// as a qcow2 with a backing file (400). A write-back upload is acknowledged before Glance
/// sees it, so Depot refuses at once what Glance is certain to refuse later. It checks only
/// what is certain from the first bytes: the declared format's signature, and the qcow2
/// safety checks; whatever passes here is still inspected by Glance during the push.
public enum FormatInspection {
    /// Bytes of the body needed to decide (the ISO signature sits at 32769).
    public static let headerLength = 40 * 1024

    /// Why Glance would refuse the data.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case formatMismatch(declared: String, detected: String)
        case unsafe(reason: String)

        /// The status Glance answers with.
        public var status: Int {
            switch self {
            case .formatMismatch: 415
            case .unsafe: 400
            }
        }

        public var description: String {
            switch self {
            case let .formatMismatch(declared, detected):
                "Image disk_format \(declared) does not match stream data \(detected); declare the format the file has (qemu-img info tells it)"
            case let .unsafe(reason):
                "Image failed safety checks: \(reason)"
            }
        }
    }

    /// Signatures of the formats Glance inspects: (format, offset, bytes).
    static let signatures: [(String, Int, [UInt8])] = [
        ("qcow2", 0, [0x51, 0x46, 0x49, 0xFB]),
        ("qed", 0, Array("QED".utf8) + [0]),
        ("vhd", 0, Array("conectix".utf8)),
        ("vhdx", 0, Array("vhdxfile".utf8)),
        ("vmdk", 0, Array("KDMV".utf8)),
        ("vdi", 0x40, [0x7F, 0x10, 0xDA, 0xBE]),
        ("luks", 0, Array("LUKS".utf8) + [0xBA, 0xBE]),
        ("iso", 0x8001, Array("CD001".utf8)),
        ("iso", 0x8001, Array("NSR02".utf8)),
        ("iso", 0x8001, Array("NSR03".utf8)),
    ]

    /// The format the header's signature names, or `raw`.
    public static func detect(_ header: [UInt8]) -> String {
        for (format, offset, magic) in signatures where header.count >= offset + magic.count {
            if Array(header[offset..<(offset + magic.count)]) == magic { return format }
        }
        return "raw"
    }

    /// Checks the first bytes of an upload (all of them when the body is shorter than
    /// `headerLength`) against the image's declared formats.
    public static func check(header: [UInt8], diskFormat: String?, containerFormat: String?) throws(Refusal) {
        guard containerFormat == "bare", let diskFormat else { return }
        let inspectable = Set(signatures.map(\.0))
        let detected = detect(header)
        if inspectable.contains(diskFormat), detected != diskFormat {
            throw .formatMismatch(declared: diskFormat, detected: detected)
        }
        if detected == "qcow2" && diskFormat == "qcow2" { try checkQcow2(header) }
    }

    /// qcow2's header (big-endian): a backing file or an external data file lets a guest read
    /// files of the host, so Glance refuses both.
    static func checkQcow2(_ header: [UInt8]) throws(Refusal) {
        func be(_ offset: Int, _ count: Int) -> UInt64 {
            guard header.count >= offset + count else { return 0 }
            return header[offset..<(offset + count)].reduce(0) { $0 << 8 | UInt64($1) }
        }
        if be(8, 8) != 0 { throw .unsafe(reason: "qcow2 image has a backing file") }
        let version = be(4, 4)
        if version >= 3, be(72, 8) & 0b100 != 0 { throw .unsafe(reason: "qcow2 image has an external data file") }
    }
}
