import BlobStore
import Catalog
import FormatInspector
import Glance
import Synchronization

/// Why an upload cannot be taken.
public enum UploadError: Error, CustomStringConvertible, Sendable {
    /// The backend refused the caller or the image (401, 403, 404, 409…), passed on.
    case refused(status: Int, message: String)
    /// The body is larger than `max_upload_size`.
    case tooLarge(size: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case let .refused(_, message): message
        case let .tooLarge(size, limit):
            "the image is \(size) bytes and this Depot takes at most \(limit) bytes per upload (max_upload_size)"
        }
    }
}

/// An image that is about to receive data through Depot, as the caller may upload it.
public struct UploadTarget: Sendable {
    public let cloud: String
    public let image: GlanceImage
    public let method: PushRecord.Method

    public init(cloud: String, image: GlanceImage, method: PushRecord.Method) {
        self.cloud = cloud
        self.image = image
        self.method = method
    }

    var key: ImageKey { ImageKey(cloud: cloud, imageID: image.id) }

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

/// Keeps the blob an upload publishes from the moment its name is known until the upload's
/// push holds it (or the upload failed): an eviction under way is waited for, so the upload
/// writes its own copy instead of deduplicating against one that is going away. A fill takes
/// the same hold (`BlobHolder.fill`) until its image's Catalog row maps to the blob.
public final class UploadHold: Sendable {
    private let budget: DiskBudget
    private let holder: BlobHolder
    private let digest = Mutex<Digest?>(nil)

    init(budget: DiskBudget, holder: BlobHolder) {
        self.budget = budget
        self.holder = holder
    }

    /// Takes the hold; blocks the calling thread while the blob is being evicted. Pass it as
    /// `BlobIngest`'s beforeCommit.
    @Sendable public func hold(_ digest: Digest) {
        budget.holdBlocking(digest, by: holder)
        self.digest.withLock { $0 = digest }
    }

    /// Ends the hold; harmless when none was taken.
    public func release() {
        if let digest = digest.withLock({ $0 }) { budget.release(digest, by: holder) }
    }
}
