import DepotTestSupport
@testable import FormatInspector
import PropertyBased
import Testing

/// The verdict depends on the bytes, never on how they arrive: uploads come in whatever pieces
/// the network delivers, Glance reads 64 KiB chunks.
struct ChunkingTests {
    static let samples: [(String, [UInt8])] = [
        ("raw", pseudoRandomBytes(count: 400_000, seed: 7)),
        ("qcow2", Crafted.qcow2(backingFileOffset: 0x300)),
        ("vmdk", Crafted.vmdk(length: 300_000)),
        ("vmdk-footer", Crafted.vmdk(descriptor: Crafted.sparseDescriptor.replacingOccurrences(of: "monolithicSparse", with: "streamOptimized"), footer: true)),
        ("vmdk-large-descriptor", Crafted.vmdk(descriptor: Crafted.sparseDescriptor + String(repeating: "# padding\n", count: 9000), descriptorSectors: 200, length: 400_000)),
        ("vhdx", Crafted.vhdx(virtualSize: 5 << 30)),
        ("vhdx-item-behind", Crafted.vhdx(virtualSize: 7, metadataOffset: 300 * 1024, itemOffset: 0)),
        ("iso", Crafted.iso(blocks: 99)),
        ("gpt", Crafted.mbr([Crafted.Partition()])),
        ("luks", Crafted.luks(version: 2)),
        ("text", Array(String(repeating: "createType=\"monolithicSparse\"\nRW 1 SPARSE \"x\"\n", count: 3000).utf8)),
    ]

    /// Feeds `bytes` in random pieces (from 1 byte to 200 KiB) and returns the inspection.
    static func inspect(_ bytes: [UInt8], rng: inout some RandomNumberGenerator) -> Inspection {
        var inspector = FormatInspector()
        var offset = 0
        while offset < bytes.count {
            let size = rng.chance(0.3) ? rng.int(1...700) : rng.int(1...200_000)
            let end = min(bytes.count, offset + size)
            bytes[offset..<end].withUnsafeBytes { inspector.feed($0) }
            offset = end
        }
        return inspector.finish()
    }

    @Test(arguments: samples.map(\.0))
    func randomSplitsGiveTheSameInspection(name: String) {
        let bytes = Self.samples.first { $0.0 == name }!.1
        let whole = Crafted.inspect(bytes)
        #expect(whole.matchingFormats.count <= 1 || name == "gpt")
        var rng = Xoshiro(seed: (UInt64(name.utf8.count) * 7919, 1, 2, 3))
        for _ in 0..<40 {
            let split = Self.inspect(bytes, rng: &rng)
            #expect(split == whole, "\(name): a split changed the inspection")
            if split != whole { break }
        }
    }

    @Test func skippingWhatNoOneWantsGivesTheSameInspection() {
        for (name, bytes) in Self.samples {
            var inspector = FormatInspector()
            var offset: UInt64 = 0
            var skipped: UInt64 = 0
            let total = UInt64(bytes.count)
            while offset < total {
                let end = min(total, offset + UInt64(FormatInspector.glanceChunkSize))
                if inspector.wantsBytes(from: offset, to: end, totalLength: total) {
                    inspector.feed(Array(bytes[Int(offset)..<Int(end)]))
                } else {
                    inspector.skip(end - offset)
                    skipped += end - offset
                }
                offset = end
            }
            #expect(inspector.finish() == Crafted.inspect(bytes), "\(name)")
            if name == "raw" { #expect(skipped > 0) }
        }
    }

    /// Memory stays flat: what the inspector keeps does not grow with the stream.
    @Test func keepsOnlyBoundedRegions() {
        var inspector = FormatInspector()
        let chunk = pseudoRandomBytes(count: 1 << 20, seed: 11)
        let baseline = MemoryLayout<FormatInspector>.size
        for _ in 0..<64 { inspector.feed(chunk) }
        #expect(inspector.length == 64 << 20)
        #expect(inspector.retainedBytes <= 64 * 1024 + baseline)
    }
}
