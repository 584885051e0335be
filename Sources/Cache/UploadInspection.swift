import BlobStore
import FormatInspector
import Glance

extension ImageCache {
    /// Inspects a stored blob as Glance inspects an upload of the same bytes, reading only what
    /// the inspection wants (the first 64 KiB and the regions its headers name): for an upload
    /// whose body Depot skipped because it already holds the bytes.
    ///
    /// - Throws: `BlobStoreError` when the blob cannot be read.
    public func inspectStored(_ digest: Digest) async throws -> Inspection {
        let store = self.store
        return try await disk.run {
            Result { () throws(BlobStoreError) -> Inspection in
                let reader = try store.open(digest)
                return try FormatInspector.inspect(length: reader.size) { (range: Range<UInt64>) throws(BlobStoreError) -> [UInt8] in
                    try reader.read(range)
                }
            }
        }.get()
    }
}

extension UploadTarget {
    /// What Glance 33 does with `inspection`'s bytes as this image's data (see
    /// `Inspection.verdict`).
    public func verdict(_ inspection: Inspection, policy: FormatPolicy) -> FormatVerdict {
        inspection.verdict(diskFormat: image.diskFormat, containerFormat: image.containerFormat, policy: policy)
    }

    /// Glance refuses data for an image that lacks `disk_format` or `container_format` (400,
    /// `glance/domain/__init__.py`, on the move to `saving`; staging does not check).
    static func missingFormats(_ image: GlanceImage) -> UploadError? {
        let missing = [("disk_format", image.diskFormat), ("container_format", image.containerFormat)].filter { ($0.1 ?? "").isEmpty }.map(\.0)
        guard !missing.isEmpty else { return nil }
        let subject = missing.count == 1 ? "Property \(missing[0])" : "Properties \(missing.joined(separator: ", "))"
        return .refused(status: 400, message: "\(subject) must be set prior to saving data.")
    }
}
