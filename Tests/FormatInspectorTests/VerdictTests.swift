import DepotTestSupport
@testable import FormatInspector
import Testing

/// Glance 33's decision on an upload (`glance/location.py`, `ImageProxy.set_data`), for each
/// rule; messages are Glance's own.
struct VerdictTests {
    let qcow2 = Crafted.inspect(Crafted.qcow2(size: 1 << 30))
    let raw = Crafted.inspect(pseudoRandomBytes(count: 100_000, seed: 3))

    func verdict(_ inspection: Inspection, _ diskFormat: String, container: String = "bare", policy: FormatPolicy = FormatPolicy()) -> FormatVerdict {
        inspection.verdict(diskFormat: diskFormat, containerFormat: container, policy: policy)
    }

    @Test func theDeclaredFormatIsTakenWithItsVirtualSize() {
        #expect(verdict(qcow2, "qcow2") == FormatVerdict(refusal: nil, format: "qcow2", virtualSize: 1 << 30))
        #expect(verdict(raw, "raw") == FormatVerdict(refusal: nil, format: "raw", virtualSize: 100_000))
    }

    @Test func anotherFormatIsRefusedUnlessDeclaredRaw() {
        let mismatch = verdict(raw, "qcow2")
        #expect(mismatch.refusal?.glanceMessage == "Image disk_format qcow2 does not match stream data raw")
        #expect(mismatch.refusal?.status == 415)
        #expect(verdict(qcow2, "vmdk").refusal?.glanceMessage == "Image disk_format vmdk does not match stream data qcow2")
        // raw takes anything, with the byte length as virtual size, but not an unsafe image.
        #expect(verdict(qcow2, "raw") == FormatVerdict(refusal: nil, format: "qcow2", virtualSize: Int64(Crafted.qcow2().count)))
        #expect(verdict(Crafted.inspect(Crafted.qcow2(backingFileOffset: 1)), "raw").refusal?.glanceMessage == "Image failed safety checks")
    }

    @Test func formatsGlanceCannotInspectTakeUnrecognizedData() {
        for format in ["ami", "aki", "ari", "ploop"] {
            #expect(verdict(raw, format) == FormatVerdict(refusal: nil, format: "raw", virtualSize: nil))
            #expect(verdict(qcow2, format).refusal?.kind == .mismatch)
        }
    }

    @Test func otherContainersAreNotInspected() {
        let unsafe = Crafted.inspect(Crafted.qcow2(backingFileOffset: 1))
        for container in ["ovf", "ova", "docker", "compressed", "ami", "aki", "ari"] {
            #expect(verdict(unsafe, "qcow2", container: container) == FormatVerdict(refusal: nil, format: nil, virtualSize: nil))
        }
    }

    @Test func severalFormatsAreRefusedExceptIsoWithGpt() {
        var both = Crafted.iso(blocks: 500)
        both.replaceSubrange(0..<512, with: Crafted.mbr([Crafted.Partition()]).prefix(512))
        #expect(verdict(Crafted.inspect(both), "iso") == FormatVerdict(refusal: nil, format: "iso", virtualSize: 500 * 2048))
        // …but not as raw: Glance's warning for raw names `data.format`, which raises.
        #expect(verdict(Crafted.inspect(both), "raw").refusal?.kind == .multipleFormats)
        var qcowIso = Crafted.iso(blocks: 500)
        qcowIso.replaceSubrange(0..<512, with: Crafted.qcow2().prefix(512))
        let refused = verdict(Crafted.inspect(qcowIso), "qcow2").refusal
        #expect(refused?.kind == .multipleFormats)
        #expect(refused?.glanceMessage == "Multiple formats detected: qcow2,iso")
    }

    @Test func safetyChecksRefuseWithGlancesMessage() throws {
        let refusal = try #require(verdict(Crafted.inspect(Crafted.qcow2(backingFileOffset: 1)), "qcow2").refusal)
        #expect(refusal.kind == .unsafe([SafetyFailure(check: "backing_file", reason: "Image has a backing file")]))
        #expect(refusal.description.hasPrefix("Image failed safety checks (qcow2: backing_file: Image has a backing file)"))
        let truncated = verdict(Crafted.inspect(Array(Crafted.vhd(size: 1).prefix(100))), "vhd").refusal
        #expect(truncated?.glanceMessage == "Incomplete file cannot be safety checked")
        let unreadable = verdict(Crafted.inspect(Crafted.vhdx(virtualSize: 1, itemLength: 4)), "vhdx").refusal
        #expect(unreadable?.glanceMessage == "Image format inspection failed")
    }

    @Test func gptChecksCanBeMadeNonFatal() {
        let extra = Crafted.inspect(Crafted.mbr([Crafted.Partition(), Crafted.Partition(type: 0x83, lba: 9)]))
        #expect(verdict(extra, "raw").refusal?.glanceMessage == "Image failed safety checks")
        #expect(verdict(extra, "raw", policy: FormatPolicy(gptSafetyChecksNonfatal: ["mbr"])) == FormatVerdict(refusal: nil, format: "gpt", virtualSize: 1 << 16))
        // Only for GPT: a non-fatal name does not excuse another format's check.
        let unsafe = Crafted.inspect(Crafted.qcow2(backingFileOffset: 1))
        #expect(verdict(unsafe, "qcow2", policy: FormatPolicy(gptSafetyChecksNonfatal: ["backing_file"])).refusal != nil)
    }

    @Test func withoutFormatMatchMismatchesPassButUnsafeDataDoesNot() {
        let lax = FormatPolicy(requireImageFormatMatch: false)
        #expect(verdict(raw, "qcow2", policy: lax) == FormatVerdict(refusal: nil, format: "raw", virtualSize: nil))
        let truncated = Crafted.inspect(Array(Crafted.vhd(size: 1).prefix(100)))
        #expect(verdict(truncated, "vhd", policy: lax).accepted)
        #expect(verdict(Crafted.inspect(Crafted.qcow2(backingFileOffset: 1)), "qcow2", policy: lax).refusal?.glanceMessage == "Image failed safety checks")
    }

    @Test func anUndecidableInspectionTakesAnything() {
        let text = Crafted.inspect(Array((String(repeating: "just some text\n", count: 40) + "Grüße\n").utf8))
        #expect(text.undecidable)
        #expect(verdict(text, "qcow2") == FormatVerdict(refusal: nil, format: nil, virtualSize: nil))
    }
}
