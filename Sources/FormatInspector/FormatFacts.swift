/// What one of oslo.utils' format inspectors knows once the stream has ended: the properties
/// Glance reads from it (`format_match`, `complete`, `virtual_size`, `actual_size`) and the
/// outcome of its safety checks.
public struct FormatFacts: Sendable, Equatable {
    /// oslo.utils' name for the format (`qcow2`, `vmdk`, …, `raw`).
    public let format: String
    /// Whether the data looks like this format (`format_match`).
    public var matches: Bool
    /// Whether the inspector captured everything it wanted (`complete`); Glance refuses to
    /// safety-check an incomplete one.
    public var complete: Bool
    /// The disk size the header announces (`virtual_size`): 0 when unknown, nil when reading
    /// it raises in oslo.utils (Glance then answers "Image format inspection failed").
    public var virtualSize: Int64?
    /// Bytes the inspector was given before it stopped (`actual_size`): the stream's length,
    /// unless the inspector failed on a chunk and was dropped from the stream then.
    public var actualSize: Int64
    /// Safety checks that fail, by oslo.utils' check name, with the reason it gives.
    public var failedChecks: [SafetyFailure]

    public init(format: String, matches: Bool, complete: Bool, virtualSize: Int64?, actualSize: Int64, failedChecks: [SafetyFailure] = []) {
        self.format = format
        self.matches = matches
        self.complete = complete
        self.virtualSize = virtualSize
        self.actualSize = actualSize
        self.failedChecks = failedChecks
    }
}

/// A failed safety check: oslo.utils' check name (`backing_file`, `mbr`, …) and its reason.
public struct SafetyFailure: Sendable, Equatable, CustomStringConvertible {
    public let check: String
    public let reason: String

    public init(check: String, reason: String) {
        self.check = check
        self.reason = reason
    }

    public var description: String { "\(check): \(reason)" }
}

/// Everything the inspection found, independent of what the image declares; `verdict` applies
/// Glance's rules for one image.
public struct Inspection: Sendable, Equatable {
    /// Bytes inspected.
    public let length: UInt64
    /// The inspectors of the formats Glance recognizes (all but `raw`), in a fixed order.
    public let formats: [FormatFacts]
    /// The `raw` inspector: matches anything, virtual size = length.
    public var raw: FormatFacts {
        FormatFacts(format: "raw", matches: true, complete: true, virtualSize: Int64(clamping: length), actualSize: Int64(clamping: length))
    }
    /// oslo.utils' VMDK inspector raises while Glance asks whether it matches (an ASCII first
    /// sector followed by non-ASCII text): Glance then skips its checks altogether.
    public let undecidable: Bool

    /// The formats the data matches (`InspectWrapper.formats` without raw).
    public var matchingFormats: [String] { formats.filter(\.matches).map(\.format) }

    public func facts(_ format: String) -> FormatFacts? {
        format == "raw" ? raw : formats.first { $0.format == format }
    }
}
