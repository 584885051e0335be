import DepotTestSupport
@testable import FormatInspector
import Testing

/// Each format's detection, virtual size and safety checks, on images built field by field.
/// Expected values are the fields written (or oslo.utils' check names and messages).
struct FormatInspectorTests {
    func only(_ bytes: [UInt8]) -> FormatFacts? {
        let inspection = Crafted.inspect(bytes)
        let matching = inspection.formats.filter(\.matches)
        return matching.count == 1 ? matching[0] : nil
    }

    @Test func rawDataMatchesNothing() {
        let inspection = Crafted.inspect(pseudoRandomBytes(count: 300_000, seed: 1))
        #expect(inspection.matchingFormats == [])
        #expect(inspection.raw.virtualSize == 300_000)
        #expect(Crafted.inspect([]).matchingFormats == [])
    }

    @Test func qcow2SizeAndChecks() throws {
        let plain = try #require(only(Crafted.qcow2(size: 5 << 30)))
        #expect(plain.format == "qcow2")
        #expect(plain.virtualSize == 5 << 30)
        #expect(plain.failedChecks == [])
        #expect(try #require(only(Crafted.qcow2(version: 2, incompatible: 0xFF))).failedChecks == [])
        #expect(only(Crafted.qcow2(backingFileOffset: 0x200))?.failedChecks.map(\.check) == ["backing_file"])
        #expect(only(Crafted.qcow2(incompatible: 0b100))?.failedChecks.map(\.check) == ["data_file"])
        // Bits 0, 1 and 3 are known (dirty, corrupt, compression type); bit 4 and above are not.
        #expect(only(Crafted.qcow2(incompatible: 0b1011))?.failedChecks == [])
        #expect(only(Crafted.qcow2(incompatible: 0b10000))?.failedChecks.map(\.reason) == ["Unknown QCOW2 features found"])
        #expect(only(Crafted.qcow2(incompatible: 1 << 40))?.failedChecks.map(\.check) == ["unknown_features"])
        #expect(only(Crafted.qcow2(version: 1))?.failedChecks.map(\.reason) == ["Unsupported qcow2 version"])
        // Under 512 bytes the header is not complete, and oslo.utils does not call it qcow2.
        #expect(Crafted.inspect(Array(Crafted.qcow2().prefix(511))).matchingFormats == [])
    }

    @Test func vhdVdiAndIsoSizes() throws {
        #expect(only(Crafted.vhd(size: 123 << 20))?.virtualSize == 123 << 20)
        #expect(only(Crafted.vdi(size: 77 << 20))?.virtualSize == 77 << 20)
        #expect(only(Crafted.iso(blocks: 1000, blockSize: 2048))?.virtualSize == 2_048_000)
        #expect(only(Crafted.iso(blocks: 1000, identifier: "NSR02"))?.format == "iso")
        // Only a primary volume descriptor (type 1) tells the size.
        #expect(only(Crafted.iso(blocks: 1000, type: 2))?.virtualSize == 0)
        // A truncated VHD still reads as VHD (the signature is enough) but is incomplete.
        let truncated = try #require(only(Array(Crafted.vhd(size: 1 << 20).prefix(300))))
        #expect(truncated.format == "vhd" && !truncated.complete && truncated.virtualSize == 0)
        #expect(Crafted.inspect(Array(Crafted.iso(blocks: 1).prefix(34815))).matchingFormats == [])
    }

    @Test func gptAndMbrChecks() {
        let protective = Crafted.Partition()
        #expect(only(Crafted.mbr([protective]))?.failedChecks == [])
        #expect(only(Crafted.mbr([protective]))?.virtualSize == 1 << 16)
        #expect(only(Crafted.mbr([Crafted.Partition(boot: 0x80, chs: [1, 1, 0], type: 0x83, lba: 2048)]))?.failedChecks == [])
        func failure(_ partitions: [Crafted.Partition]) -> String? { only(Crafted.mbr(partitions))?.failedChecks.first?.reason }
        #expect(failure([]) == "GPT MBR has no partitions defined")
        #expect(failure([Crafted.Partition(boot: 0x42)]) == "MBR PTE 0 has invalid boot flag")
        #expect(failure([Crafted.Partition(chs: [0, 3, 0])]) == "GPT MBR has invalid start CHS")
        #expect(failure([Crafted.Partition(lba: 2)]) == "GPT MBR has invalid start LBA")
        #expect(failure([protective, Crafted.Partition(type: 0x83, lba: 4096)]) == "GPT MBR defines invalid extra partitions")
        #expect(failure([Crafted.Partition(type: 0x83, lba: 4096), protective]) == "GPT MBR defines invalid extra partitions")
        // A FAT boot sector has the same signature: two FATs and a fixed-disk media byte.
        var fat = Crafted.mbr([protective])
        fat[0x10] = 2
        fat[0x15] = 0xF8
        #expect(Crafted.inspect(fat).matchingFormats == [])
    }

    @Test func luksTakesVersionOneOnly() throws {
        let v1 = try #require(only(Crafted.luks(version: 1, payloadOffset: 1024)))
        #expect(v1.failedChecks == [])
        #expect(v1.virtualSize == Int64((1 << 21) - 1024 * 512))
        #expect(only(Crafted.luks(version: 2))?.failedChecks == [SafetyFailure(check: "version", reason: "LUKS version 2 is not supported")])
        let short = try #require(only(Array(Crafted.luks().prefix(100))))
        #expect(!short.complete && short.virtualSize == nil)
    }

    @Test func qedIsAlwaysRefused() {
        var qed = [UInt8](repeating: 0, count: 4096)
        qed.replaceSubrange(0..<4, with: Array("QED".utf8) + [0])
        #expect(only(qed)?.failedChecks.map(\.check) == ["banned"])
    }

    @Test func vmdkSparseAndStreamOptimized() throws {
        let sparse = try #require(only(Crafted.vmdk(sectors: 4096)))
        #expect(sparse.format == "vmdk" && sparse.complete && sparse.failedChecks == [])
        #expect(sparse.virtualSize == Int64(4096 * 512))
        let stream = try #require(only(Crafted.vmdk(descriptor: Crafted.sparseDescriptor.replacingOccurrences(of: "monolithicSparse", with: "streamOptimized"), footer: true)))
        #expect(stream.complete && stream.failedChecks == [])
        // The footer must repeat the header and be framed by its markers.
        var badMarker = Crafted.vmdk(footer: true)
        badMarker[badMarker.count - 512] = 1
        #expect(only(badMarker)?.failedChecks.map(\.reason) == ["End-of-stream marker is invalid"])
        var otherDescriptor = Crafted.vmdk(footer: true)
        otherDescriptor[otherDescriptor.count - 1024 + 36] = 7
        #expect(only(otherDescriptor)?.failedChecks.map(\.reason) == ["Footer specifies a different descriptor than header"])
        // A footer that would need the stream's last 1536 bytes, on a stream shorter than that.
        #expect(only(Array(Crafted.vmdk(descriptorSectors: 1, footer: true).prefix(1100)))?.complete == false)
    }

    @Test func vmdkDescriptorRules() {
        func checks(_ descriptor: String) -> [String]? {
            only(Crafted.vmdk(descriptor: descriptor))?.failedChecks.map(\.reason)
        }
        let sparse = Crafted.sparseDescriptor
        #expect(checks(sparse.replacingOccurrences(of: "monolithicSparse", with: "monolithicFlat")) == ["Unsupported subformat"])
        #expect(checks(sparse.replacingOccurrences(of: "\"disk.vmdk\"", with: "\"/etc/shadow\"")) == ["Invalid extent filenames found"])
        #expect(checks(sparse.replacingOccurrences(of: "RW 2097152 SPARSE \"disk.vmdk\"", with: "")) == ["No extents found"])
        #expect(checks(sparse + "something odd here\n") == ["Invalid VMDK descriptor data"])
        #expect(checks(sparse.uppercased().replacingOccurrences(of: "MONOLITHICSPARSE", with: "monolithicSparse")) == [])
        #expect(checks("") == ["No descriptor found"])
        #expect(only(Crafted.vmdk(version: 4))?.failedChecks.map(\.reason) == ["No descriptor found"])
        #expect(only(Crafted.vmdk(descriptorSector: 2))?.failedChecks.map(\.reason) == ["No descriptor found"])
    }

    @Test func vmdkDescriptorFiles() throws {
        let flat = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/hosts\" 0\n" + String(repeating: "#\n", count: 40)
        let facts = try #require(only(Array(flat.utf8)))
        #expect(facts.format == "vmdk" && facts.complete)
        #expect(facts.failedChecks.map(\.reason) == ["Unsupported subformat"])
        // oslo.utils reads a descriptor file claiming a sparse type, then cannot size it.
        let claimsSparse = flat.replacingOccurrences(of: "monolithicFlat", with: "monolithicSparse")
        #expect(only(Array(claimsSparse.utf8))?.virtualSize == nil)
        // Text without createType is not a VMDK; text whose first sector is ASCII but which
        // goes on in UTF-8 makes oslo.utils' VMDK inspector raise when asked.
        let prose = String(repeating: "hello world\n", count: 100)
        #expect(Crafted.inspect(Array(prose.utf8)).matchingFormats == [])
        #expect(!Crafted.inspect(Array(prose.utf8)).undecidable)
        #expect(Crafted.inspect(Array((prose + "Grüße\n").utf8)).undecidable)
    }

    @Test func vhdxFollowsItsTables() throws {
        let vhdx = try #require(only(Crafted.vhdx(virtualSize: 64 << 30)))
        #expect(vhdx.format == "vhdx" && vhdx.complete && vhdx.virtualSize == 64 << 30)
        // An item of another length than 8 cannot be read (oslo.utils raises).
        #expect(only(Crafted.vhdx(virtualSize: 1, itemLength: 16))?.virtualSize == nil)
        // A broken region table drops the inspector after 256 KiB: complete, no size.
        var broken = Crafted.vhdx(virtualSize: 1 << 30)
        broken[192 * 1024] = 0
        let dropped = try #require(only(broken))
        #expect(dropped.complete && dropped.virtualSize == 0 && dropped.actualSize == 256 * 1024)
        // Metadata the stream had passed before the table named it: never captured.
        let behind = try #require(only(Crafted.vhdx(virtualSize: 1 << 30, metadataOffset: 64 * 1024)))
        #expect(!behind.complete)
        // Truncated before the region table.
        #expect(only(Array(Crafted.vhdx(virtualSize: 1).prefix(100_000)))?.complete == false)
    }
}
