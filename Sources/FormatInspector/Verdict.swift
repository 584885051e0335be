/// Glance's `[image_format]` options that change what an upload's inspection refuses.
public struct FormatPolicy: Sendable, Equatable {
    /// Refuse data whose format differs from `disk_format` or cannot be inspected
    /// (`require_image_format_match`, default true). Failed safety checks are refused either way.
    public var requireImageFormatMatch = true
    /// Safety checks that do not refuse an image detected as GPT (`gpt_safety_checks_nonfatal`,
    /// default none; the GPT inspector's one check is `mbr`).
    public var gptSafetyChecksNonfatal: Set<String> = []

    public init(requireImageFormatMatch: Bool = true, gptSafetyChecksNonfatal: Set<String> = []) {
        self.requireImageFormatMatch = requireImageFormatMatch
        self.gptSafetyChecksNonfatal = gptSafetyChecksNonfatal
    }
}

/// Why Glance refuses an upload's data: 415 `InvalidImageData`, with Glance's own message.
public struct FormatRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// "Image disk_format X does not match stream data Y".
        case mismatch
        /// "Multiple formats detected: …".
        case multipleFormats
        /// "Incomplete file cannot be safety checked": a truncated header.
        case incomplete
        /// "Image failed safety checks".
        case unsafe([SafetyFailure])
        /// "Image format inspection failed": oslo.utils itself failed on the data.
        case inspectionFailed
    }

    public let kind: Kind
    /// The message Glance answers with (its 415's detail).
    public let glanceMessage: String
    /// The format the data was inspected as.
    public let format: String

    /// Glance's status for every refusal here.
    public var status: Int { 415 }

    /// What to do about a failed safety check, by format.
    static let remedy = [
        "qcow2": "upload a self-contained qcow2 v2 or v3: qemu-img convert -O qcow2 (without -B) copies the backing or data file in",
        "vmdk": "upload a monolithicSparse or streamOptimized VMDK whose extents name no path: qemu-img convert -O vmdk -o subformat=streamOptimized",
        "gpt": "fix the MBR partition table (one protective 0xEE partition at LBA 1 for GPT), or set image_format.gpt_safety_checks_nonfatal: mbr as your Glance has it",
        "qed": "convert it: qemu-img convert -O qcow2",
        "luks": "use LUKS1 (cryptsetup luksFormat --type luks1) or upload the image unencrypted",
    ]

    /// Glance's message, then why and what to do.
    public var description: String {
        switch kind {
        case .mismatch:
            "\(glanceMessage); declare the format the file has (qemu-img info names it), or convert the file to the declared format"
        case .multipleFormats:
            "\(glanceMessage); Glance refuses data that reads as more than one format (a header hidden inside another)"
        case .incomplete:
            "\(glanceMessage): the \(format) data ends before its header does; upload the whole image"
        case let .unsafe(failures):
            "\(glanceMessage) (\(format): \(failures.map(\.description).joined(separator: "; "))); \(Self.remedy[format] ?? "convert the image to qcow2 or raw with qemu-img convert")"
        case .inspectionFailed:
            "\(glanceMessage): the \(format) header holds values Glance cannot read; check the file with qemu-img check"
        }
    }
}

/// What Glance does with an upload's data: refuse it, or take it and record a virtual size.
public struct FormatVerdict: Sendable, Equatable {
    /// Nil when Glance takes the data.
    public var refusal: FormatRefusal?
    /// The format Glance inspected the data as; nil when it did not inspect (not `bare`).
    public var format: String?
    /// The `virtual_size` Glance records; nil when it records none.
    public var virtualSize: Int64?

    public var accepted: Bool { refusal == nil }
}

/// The formats oslo.utils inspects (`ALL_FORMATS`); any other `disk_format` (ami, aki, ari,
/// ploop) takes data in which none of them is found.
public let inspectableFormats: Set<String> = ["raw", "qcow2", "vhd", "vhdx", "vmdk", "vdi", "qed", "iso", "gpt", "luks"]

extension Inspection {
    /// Glance 33's decision for data uploaded to an image with these formats
    /// (`glance/location.py`, `ImageProxy.set_data`).
    ///
    /// Only `bare` containers are inspected. Several matching formats are refused, except ISO
    /// with a GPT in front (a bootable ISO), taken as ISO. Data of another format than
    /// declared is refused, except for `raw` (anything but ISO+GPT, with the byte length as
    /// virtual size) and for formats oslo.utils cannot inspect (unless something was
    /// recognized). The detected format's safety checks always run; GPT's may be non-fatal.
    public func verdict(diskFormat: String?, containerFormat: String?, policy: FormatPolicy = FormatPolicy()) -> FormatVerdict {
        guard containerFormat == "bare", !undecidable else { return FormatVerdict(refusal: nil, format: nil, virtualSize: nil) }
        let diskFormat = diskFormat ?? ""
        let matching = formats.filter(\.matches)
        let inspector: FormatFacts
        var virtualSize: Int64 = 0
        func refuse(_ kind: FormatRefusal.Kind, _ message: String, as format: String, always: Bool = false) -> FormatVerdict {
            if always || policy.requireImageFormatMatch {
                return FormatVerdict(refusal: FormatRefusal(kind: kind, glanceMessage: message, format: format), format: format, virtualSize: nil)
            }
            return FormatVerdict(refusal: nil, format: format, virtualSize: virtualSize == 0 ? nil : virtualSize)
        }
        if Set(matching.map(\.format)) == ["iso", "gpt"] {
            inspector = matching.first { $0.format == "iso" }!
        } else if matching.count > 1 {
            return refuse(.multipleFormats, "Multiple formats detected: \(matching.map(\.format).joined(separator: ","))", as: matching[0].format)
        } else {
            inspector = matching.first ?? raw
        }
        let format = inspector.format
        if format == diskFormat {
            guard let size = inspector.virtualSize else { return refuse(.inspectionFailed, "Image format inspection failed", as: format) }
            virtualSize = size
        } else if format == "raw" && !inspectableFormats.contains(diskFormat) {
            // ami, aki, ari: nothing recognized, nothing to check.
        } else if diskFormat == "raw" {
            // Glance logs `data.format` here, which raises for the ISO+GPT pair it allowed above.
            if matching.count > 1 {
                return refuse(.multipleFormats, "Multiple formats detected: \(matching.map(\.format).joined(separator: ","))", as: format)
            }
            virtualSize = inspector.actualSize
        } else {
            return refuse(.mismatch, "Image disk_format \(diskFormat) does not match stream data \(format)", as: format)
        }
        guard inspector.complete else { return refuse(.incomplete, "Incomplete file cannot be safety checked", as: format) }
        if !inspector.failedChecks.isEmpty {
            var fatal = Set(inspector.failedChecks.map(\.check)).subtracting(policy.gptSafetyChecksNonfatal)
            // Kernels and ramdisks may carry an MBR that is not one on purpose.
            if diskFormat == "aki" || diskFormat == "ari" { fatal.remove("mbr") }
            if format != "gpt" || !fatal.isEmpty {
                return refuse(.unsafe(inspector.failedChecks), "Image failed safety checks", as: format, always: true)
            }
        }
        return FormatVerdict(refusal: nil, format: format, virtualSize: virtualSize == 0 ? nil : virtualSize)
    }
}
