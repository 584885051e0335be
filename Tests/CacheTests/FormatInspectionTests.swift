import Cache
import DepotTestSupport
import Testing

struct FormatInspectionTests {
    /// A qcow2 header: magic, version, backing file offset, and (v3) incompatible features.
    static func qcow2(version: UInt32 = 3, backingFileOffset: UInt64 = 0, incompatibleFeatures: UInt64 = 0) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: FormatInspection.headerLength)
        func put(_ value: UInt64, at offset: Int, bytes: Int) {
            for i in 0..<bytes { header[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(bytes - 1 - i))) }
        }
        header.replaceSubrange(0..<4, with: [0x51, 0x46, 0x49, 0xFB])
        put(UInt64(version), at: 4, bytes: 4)
        put(backingFileOffset, at: 8, bytes: 8)
        put(16, at: 20, bytes: 4)   // cluster bits
        put(incompatibleFeatures, at: 72, bytes: 8)
        return header
    }

    @Test func signaturesAreRecognized() {
        var iso = [UInt8](repeating: 0, count: FormatInspection.headerLength)
        iso.replaceSubrange(0x8001..<0x8006, with: Array("CD001".utf8))
        var vdi = [UInt8](repeating: 0, count: 512)
        vdi.replaceSubrange(0x40..<0x44, with: [0x7F, 0x10, 0xDA, 0xBE])
        #expect(FormatInspection.detect(Self.qcow2()) == "qcow2")
        #expect(FormatInspection.detect(iso) == "iso")
        #expect(FormatInspection.detect(vdi) == "vdi")
        #expect(FormatInspection.detect(Array("vhdxfile".utf8) + [0, 0]) == "vhdx")
        #expect(FormatInspection.detect(pseudoRandomBytes(count: 65536, seed: 1)) == "raw")
        #expect(FormatInspection.detect([]) == "raw")
    }

    @Test func aDeclaredFormatTheBytesDoNotHaveIsRefusedAs415() {
        let raw = pseudoRandomBytes(count: 65536, seed: 2)
        let refusal = #expect(throws: FormatInspection.Refusal.self) {
            try FormatInspection.check(header: raw, diskFormat: "qcow2", containerFormat: "bare")
        }
        #expect(refusal == .formatMismatch(declared: "qcow2", detected: "raw"))
        #expect(refusal?.status == 415)
    }

    @Test func whatGlanceAcceptsIsAccepted() throws {
        // raw takes anything; formats Glance cannot inspect take unrecognized bytes; only
        // bare containers are inspected.
        try FormatInspection.check(header: Self.qcow2(), diskFormat: "raw", containerFormat: "bare")
        try FormatInspection.check(header: pseudoRandomBytes(count: 1000, seed: 3), diskFormat: "ami", containerFormat: "bare")
        try FormatInspection.check(header: pseudoRandomBytes(count: 1000, seed: 3), diskFormat: "qcow2", containerFormat: "ovf")
        try FormatInspection.check(header: Self.qcow2(), diskFormat: "qcow2", containerFormat: "bare")
        try FormatInspection.check(header: Self.qcow2(version: 2, incompatibleFeatures: 4), diskFormat: "qcow2", containerFormat: "bare")
    }

    @Test func qcow2WithABackingOrDataFileIsUnsafe() {
        let backing = #expect(throws: FormatInspection.Refusal.self) {
            try FormatInspection.check(header: Self.qcow2(backingFileOffset: 512), diskFormat: "qcow2", containerFormat: "bare")
        }
        #expect(backing?.status == 400)
        #expect(backing?.description.contains("backing file") == true)
        let dataFile = #expect(throws: FormatInspection.Refusal.self) {
            try FormatInspection.check(header: Self.qcow2(incompatibleFeatures: 0b100), diskFormat: "qcow2", containerFormat: "bare")
        }
        #expect(dataFile?.description.contains("data file") == true)
    }
}
