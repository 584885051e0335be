@testable import FormatInspector

/// Images built field by field from each format's specification (qemu's docs/interop, the
/// VHDX and VMDK specifications, ECMA-119, UEFI), for tests that need one field changed.
enum Crafted {
    static func put(_ bytes: inout [UInt8], _ value: UInt64, at offset: Int, width: Int, bigEndian: Bool = false) {
        for i in 0..<width {
            let shift = UInt64(8 * (bigEndian ? width - 1 - i : i))
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> shift)
        }
    }

    static func put(_ bytes: inout [UInt8], _ text: String, at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + text.utf8.count), with: Array(text.utf8))
    }

    /// A qcow2 header (big-endian) and `length` bytes in all.
    static func qcow2(version: UInt64 = 3, backingFileOffset: UInt64 = 0, size: UInt64 = 1 << 30, incompatible: UInt64 = 0, length: Int = 1 << 18) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        put(&bytes, version, at: 4, width: 4, bigEndian: true)
        put(&bytes, backingFileOffset, at: 8, width: 8, bigEndian: true)
        put(&bytes, 16, at: 20, width: 4, bigEndian: true)
        put(&bytes, size, at: 24, width: 8, bigEndian: true)
        if version >= 3 { put(&bytes, incompatible, at: 72, width: 8, bigEndian: true) }
        return bytes
    }

    /// A dynamic VHD's footer copy at the start ("conectix", original size at 40).
    static func vhd(size: UInt64, length: Int = 4096) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        put(&bytes, "conectix", at: 0)
        put(&bytes, size, at: 40, width: 8, bigEndian: true)
        return bytes
    }

    static func vdi(size: UInt64, length: Int = 4096) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        put(&bytes, "<<< Oracle VM VirtualBox Disk Image >>>\n", at: 0)
        put(&bytes, 0xBEDA_107F, at: 0x40, width: 4)
        put(&bytes, size, at: 0x170, width: 8)
        return bytes
    }

    /// An ISO 9660 primary volume descriptor at 32 KiB.
    static func iso(blocks: UInt32, blockSize: UInt16 = 2048, type: UInt8 = 1, identifier: String = "CD001", length: Int = 48 * 1024) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes[32768] = type
        put(&bytes, identifier, at: 32769)
        put(&bytes, UInt64(blocks), at: 32768 + 80, width: 4)
        put(&bytes, UInt64(blocks), at: 32768 + 84, width: 4, bigEndian: true)
        put(&bytes, UInt64(blockSize), at: 32768 + 128, width: 2)
        put(&bytes, UInt64(blockSize), at: 32768 + 130, width: 2, bigEndian: true)
        return bytes
    }

    /// An MBR partition entry: boot flag, start CHS, type, start LBA.
    struct Partition {
        var boot: UInt8 = 0
        var chs: [UInt8] = [0, 2, 0]
        var type: UInt8 = 0xEE
        var lba: UInt32 = 1
    }

    static func mbr(_ partitions: [Partition], length: Int = 1 << 16) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        for (i, partition) in partitions.enumerated() {
            let entry = 446 + 16 * i
            bytes[entry] = partition.boot
            bytes.replaceSubrange((entry + 1)...(entry + 3), with: partition.chs)
            bytes[entry + 4] = partition.type
            put(&bytes, UInt64(partition.lba), at: entry + 8, width: 4)
            put(&bytes, 1000, at: entry + 12, width: 4)
        }
        bytes[510] = 0x55
        bytes[511] = 0xAA
        return bytes
    }

    static func luks(version: UInt64 = 1, payloadOffset: UInt64 = 4096, length: Int = 1 << 21) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.replaceSubrange(0..<6, with: Array("LUKS".utf8) + [0xBA, 0xBE])
        put(&bytes, version, at: 6, width: 2, bigEndian: true)
        put(&bytes, "aes", at: 8)
        put(&bytes, payloadOffset, at: 104, width: 4, bigEndian: true)
        return bytes
    }

    static let sparseDescriptor = """
        # Disk DescriptorFile
        version=1
        CID=12345678
        parentCID=ffffffff
        createType="monolithicSparse"

        # Extent description
        RW 2097152 SPARSE "disk.vmdk"

        # The Disk Data Base
        #DDB

        ddb.virtualHWVersion = "4"
        ddb.adapterType = "ide"

        """

    /// A hosted sparse extent: the KDMV header, the descriptor at sector 1 (NUL-padded to
    /// `descriptorSectors`), and for a footer (grain directory at the end) a footer marker,
    /// the footer (a copy of the header) and an end-of-stream marker in the last 1536 bytes.
    static func vmdk(
        descriptor: String = sparseDescriptor, sectors: UInt64 = 2_097_152, version: UInt64 = 1, descriptorSector: UInt64 = 1,
        descriptorSectors: UInt64 = 20, footer: Bool = false, length: Int = 1 << 17
    ) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        func header(_ grainDirectory: UInt64) -> [UInt8] {
            var h = [UInt8](repeating: 0, count: 512)
            put(&h, "KDMV", at: 0)
            put(&h, version, at: 4, width: 4)
            put(&h, sectors, at: 12, width: 8)
            put(&h, 128, at: 20, width: 8)
            put(&h, descriptorSector, at: 28, width: 8)
            put(&h, descriptorSectors, at: 36, width: 8)
            put(&h, 512, at: 44, width: 4)
            put(&h, grainDirectory, at: 56, width: 8)
            return h
        }
        bytes.replaceSubrange(0..<512, with: header(footer ? .max : 21))
        put(&bytes, descriptor, at: 512)
        if footer {
            let end = length
            put(&bytes, 3, at: end - 1536 + 12, width: 4)
            bytes.replaceSubrange((end - 1024)..<(end - 512), with: header(21))
        }
        return bytes
    }

    /// A VHDX: identifier, region table at 192 KiB naming the metadata region, whose table
    /// names the virtual disk size item.
    static func vhdx(virtualSize: UInt64, metadataOffset: Int = 1 << 20, itemOffset: Int = 0x10000, itemLength: UInt64 = 8, length: Int = 2 << 20) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        put(&bytes, "vhdxfile", at: 0)
        let table = 192 * 1024
        put(&bytes, "regi", at: table)
        put(&bytes, 2, at: table + 8, width: 4)
        // First entry: the BAT (another GUID), second: the metadata region.
        bytes.replaceSubrange((table + 16)..<(table + 32), with: [UInt8](repeating: 0x2D, count: 16))
        bytes.replaceSubrange((table + 48)..<(table + 64), with: VHDXInspector.metadataRegionGUID)
        put(&bytes, UInt64(metadataOffset), at: table + 64, width: 8)
        put(&bytes, 1 << 20, at: table + 72, width: 4)
        put(&bytes, "metadata", at: metadataOffset)
        put(&bytes, 2, at: metadataOffset + 10, width: 2)
        bytes.replaceSubrange((metadataOffset + 32)..<(metadataOffset + 48), with: [UInt8](repeating: 0x11, count: 16))
        bytes.replaceSubrange((metadataOffset + 64)..<(metadataOffset + 80), with: VHDXInspector.virtualDiskSizeGUID)
        put(&bytes, UInt64(itemOffset), at: metadataOffset + 80, width: 4)
        put(&bytes, itemLength, at: metadataOffset + 84, width: 4)
        if metadataOffset + itemOffset + 8 <= length { put(&bytes, virtualSize, at: metadataOffset + itemOffset, width: 8) }
        return bytes
    }

    /// Runs the inspector over `bytes` in one piece.
    static func inspect(_ bytes: [UInt8]) -> Inspection {
        var inspector = FormatInspector()
        inspector.feed(bytes)
        return inspector.finish()
    }
}
