/// The formats whose inspection needs only bytes at fixed offsets within Glance's first chunk:
/// the first sector (qcow2, QED, VHD, VDI, GPT/MBR), LUKS's 592-byte header, and the ISO
/// volume descriptor at 32 KiB. Each mirrors its oslo.utils inspector; `head` holds the first
/// 64 KiB of the stream (fewer when the stream is shorter) and `length` all of it.
enum HeaderFormats {
    static func all(head: [UInt8], length: UInt64) -> [FormatFacts] {
        [qcow2(head, length), vhd(head, length), vdi(head, length), qed(head, length), iso(head, length), gpt(head, length), luks(head, length)]
    }

    static let sector = 512

    /// oslo.utils `QcowInspector`: 512-byte big-endian header. Version 2 has no feature bits;
    /// version 3 may set only bits 0-3 of the incompatible features (bit 2: external data file).
    static func qcow2(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let complete = head.count >= sector
        let matches = complete && head.hasBytes([0x51, 0x46, 0x49, 0xFB])
        var failures: [SafetyFailure] = []
        if complete {
            if head.bigEndian(8, 8) != 0 { failures.append(.init(check: "backing_file", reason: "Image has a backing file")) }
            if head[79] & 0x04 != 0 { failures.append(.init(check: "data_file", reason: "Image has data_file set")) }
            switch head.bigEndian(4, 4) {
            case 2: break
            case 3:
                if head[72..<79].contains(where: { $0 != 0 }) || head[79] & 0xF0 != 0 {
                    failures.append(.init(check: "unknown_features", reason: "Unknown QCOW2 features found"))
                }
            default: failures.append(.init(check: "unknown_features", reason: "Unsupported qcow2 version"))
            }
        }
        return FormatFacts(
            format: "qcow2", matches: matches, complete: complete, virtualSize: matches ? pythonInt(head.bigEndian(24, 8)) : 0,
            actualSize: Int64(clamping: length), failedChecks: failures)
    }

    /// oslo.utils `QEDInspector`: recognized only to be refused.
    static func qed(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let complete = head.count >= sector
        return FormatFacts(
            format: "qed", matches: complete && head.hasBytes(Array("QED".utf8) + [0]), complete: complete,
            virtualSize: Int64(clamping: length), actualSize: Int64(clamping: length),
            failedChecks: [.init(check: "banned", reason: "This file format is not allowed")])
    }

    /// oslo.utils `VHDInspector`: the "conectix" footer copy at the start; the size at 40.
    static func vhd(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let complete = head.count >= sector
        let matches = head.hasBytes(Array("conectix".utf8))
        return FormatFacts(
            format: "vhd", matches: matches, complete: complete, virtualSize: complete && matches ? pythonInt(head.bigEndian(40, 8)) : 0,
            actualSize: Int64(clamping: length))
    }

    /// oslo.utils `VDIInspector`: little-endian signature at 0x40, size at 0x170.
    static func vdi(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let complete = head.count >= sector
        let matches = complete && head.littleEndian(0x40, 4) == 0xBEDA_107F
        return FormatFacts(
            format: "vdi", matches: matches, complete: complete, virtualSize: matches ? pythonInt(head.littleEndian(0x170, 8)) : 0,
            actualSize: Int64(clamping: length))
    }

    /// oslo.utils `ISOInspector`: the first volume descriptor at 32 KiB (ISO 9660 or UDF); the
    /// size only from a primary volume descriptor (type 1).
    static func iso(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let descriptor = 32 * 1024
        let complete = head.count >= descriptor + 2048
        let matches = complete && ["CD001", "NSR02", "NSR03"].contains { head.hasBytes(Array($0.utf8), at: descriptor + 1) }
        var size: Int64 = 0
        if matches, head[descriptor] == 1 {
            size = Int64(head.littleEndian(descriptor + 80, 4)) * Int64(head.littleEndian(descriptor + 128, 2))
        }
        return FormatFacts(format: "iso", matches: matches, complete: complete, virtualSize: size, actualSize: Int64(clamping: length))
    }

    /// oslo.utils `GPTInspector`: an MBR signature that is not a FAT boot sector; the `mbr`
    /// check wants boot flags 0/0x80, some partition, and a protective 0xEE entry alone in
    /// the first slot, starting at CHS 0/2/0 and LBA 1.
    static func gpt(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let complete = head.count >= sector
        let isFAT = complete && head[0x10] == 2 && head[0x15] == 0xF8
        let matches = complete && head.littleEndian(510, 2) == 0xAA55 && !isFAT
        let failure = complete ? mbrFailure(head) : nil
        return FormatFacts(
            format: "gpt", matches: matches, complete: complete, virtualSize: Int64(clamping: length), actualSize: Int64(clamping: length),
            failedChecks: failure.map { [SafetyFailure(check: "mbr", reason: $0)] } ?? [])
    }

    static func mbrFailure(_ head: [UInt8]) -> String? {
        var used: [Int] = []
        var protective = false
        for i in 0..<4 {
            let entry = 446 + 16 * i
            let boot = head[entry]
            if boot != 0x00 && boot != 0x80 { return "MBR PTE \(i) has invalid boot flag" }
            let type = head[entry + 4]
            if type != 0 { used.append(i) }
            if type == 0xEE {
                protective = true
                if Array(head[(entry + 1)...(entry + 3)]) != [0x00, 0x02, 0x00] { return "GPT MBR has invalid start CHS" }
                if head.littleEndian(entry + 8, 4) != 1 { return "GPT MBR has invalid start LBA" }
            }
        }
        if protective && used != [0] { return "GPT MBR defines invalid extra partitions" }
        if used.isEmpty { return "GPT MBR has no partitions defined" }
        return nil
    }

    /// oslo.utils `LUKSInspector` (without a passphrase, as Glance runs it): only LUKS1 passes;
    /// the virtual size is what follows the payload offset.
    static func luks(_ head: [UInt8], _ length: UInt64) -> FormatFacts {
        let header = 592
        let complete = head.count >= header
        let matches = head.hasBytes(Array("LUKS".utf8) + [0xBA, 0xBE])
        // Fewer than 168 bytes: oslo.utils' struct.unpack of the header raises.
        let virtualSize: Int64? = head.count >= 168 ? Int64(clamping: length) - Int64(head.bigEndian(104, 4)) * 512 : nil
        let version = head.bigEndian(6, 2)
        return FormatFacts(
            format: "luks", matches: matches, complete: complete, virtualSize: virtualSize, actualSize: Int64(clamping: length),
            failedChecks: version == 1 ? [] : [.init(check: "version", reason: "LUKS version \(version) is not supported")])
    }

    /// A header's unsigned size as Glance would store it; beyond Int64, Glance's database
    /// would fail, which Depot reports as a failed inspection.
    static func pythonInt(_ value: UInt64) -> Int64? {
        value > UInt64(Int64.max) ? nil : Int64(value)
    }
}
