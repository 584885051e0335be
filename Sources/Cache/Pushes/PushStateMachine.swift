import Catalog
import Foundation
import Glance

/// How one attempt at a push ended.
package enum PushOutcome: Equatable, Sendable {
    case done
    case permanent(String, status: Int? = nil)
    /// `after`: seconds to wait before the next attempt; nil for the push's backoff.
    case retry(String, after: Double?, status: Int? = nil)

    package var status: Int? {
        switch self {
        case .done: nil
        case let .permanent(_, status), let .retry(_, _, status): status
        }
    }
}

/// One attempt at a push, as decisions without I/O: what to do next given what Glance says of
/// the image and the push's method, and when the attempt is over and how.
///
/// The owner carries out each action (a Glance call, a wait, a comparison of hashes) and feeds
/// back what it saw. `C` is the clock the import wait is measured on; the stuck rule compares
/// Glance's `updated_at` with the wall clock, which the owner passes as a date.
package struct PushStateMachine<C: Clock> where C.Duration == Duration {
    package typealias Outcome = PushOutcome

    /// Whose credentials a read of the image uses.
    package enum Credentials: Equatable, Sendable {
        /// The attempt's own: the caller's token for a write-through upload (Glance decides
        /// whether the caller may upload), else the service's.
        case attempt
        case service
    }

    package enum Action: Equatable {
        /// Read the image's record, after waiting `after`, and report it with `read`.
        case read(Credentials, after: Duration?)
        /// `PUT /v2/images/{id}/file` with the blob, then report `transferred`.
        case upload
        /// `PUT /v2/images/{id}/stage` with the blob, then the glance-direct import; report
        /// `transferred`.
        case stageAndImport
        /// The glance-direct import of the bytes an earlier attempt staged; report `transferred`.
        case importStaged
        /// Compare the image's size and hashes with the blob's: report `verified`.
        case verify(GlanceImage)
        case end(Outcome)
    }

    private enum Phase {
        /// Before any transfer: the image's status and the method choose it.
        case deciding
        case transferred
        /// Glance is importing the staged bytes; the push waits until `deadline`.
        case importing(deadline: C.Instant)
        case ended
    }

    package let method: PushRecord.Method
    private let importWait: Duration
    private let stuckAfter: Duration
    private var phase = Phase.deciding

    /// - Parameters:
    ///   - importWait: how long the attempt follows a glance-direct import.
    ///   - stuckAfter: an image left `saving` or `importing` this long will not take data.
    package init(method: PushRecord.Method, importWait: Duration, stuckAfter: Duration) {
        self.method = method
        self.importWait = importWait
        self.stuckAfter = stuckAfter
    }

    /// The first action of the attempt.
    package func start() -> Action { .read(.attempt, after: nil) }

    /// Glance's record of the image, as the owner read it.
    ///
    /// - Parameters:
    ///   - now: the instant of `C` (for the import wait).
    ///   - date: the wall clock now (against the image's `updated_at`).
    package mutating func read(_ image: GlanceImage, now: C.Instant, date: Date) -> Action {
        switch phase {
        case .deciding:
            return decide(image, date: date)
        case .transferred:
            guard method == .glanceDirect else { return verify(image) }
            let deadline = now.advanced(by: importWait)
            phase = .importing(deadline: deadline)
            return follow(image, now: now, deadline: deadline)
        case let .importing(deadline):
            return follow(image, now: now, deadline: deadline)
        case .ended:
            preconditionFailure("a read after the push attempt ended")
        }
    }

    /// The transfer the machine asked for went through.
    package mutating func transferred() -> Action {
        phase = .transferred
        return .read(.service, after: nil)
    }

    /// Done only when Glance reports the blob's own size and hash.
    package mutating func verified(_ image: GlanceImage, blob: BlobRecord) -> Action {
        guard image.isActive else {
            return end(.permanent("the backend left the image \(image.status ?? "without a status") after the upload"))
        }
        if let size = image.size, size != UInt64(blob.size) {
            return end(.permanent("the backend holds \(size) bytes for this image, Depot pushed \(blob.size)"))
        }
        if image.osHashAlgo == "sha512", let value = image.osHashValue, let expected = blob.sha512, value.lowercased() != expected {
            return end(.permanent("the backend's os_hash_value \(value) differs from the pushed bytes' SHA-512 \(expected)"))
        }
        if image.osHashAlgo == nil, let checksum = image.checksum, let md5 = blob.md5, checksum.lowercased() != md5 {
            return end(.permanent("the backend's checksum \(checksum) differs from the pushed bytes' MD5 \(md5)"))
        }
        return end(.done)
    }

    /// A Glance call failed.
    package mutating func failed(_ error: GlanceError) -> Action { end(Self.classify(error)) }

    /// Whether a refusal ends the push or only this attempt.
    package static func classify(_ error: GlanceError) -> Outcome {
        let status = error.status
        if error.isTransient || error.isUnauthorized { return .retry("\(error)", after: nil, status: status) }
        switch status {
        case 404?, 410?: return .permanent("the image was deleted in the backend (\(error))", status: status)
        case 409?: return .permanent("the backend refused the data as a conflict, usually because the image already has data (\(error))", status: status)
        case 413?: return .permanent("the backend refused the data as too large (\(error))", status: status)
        case 415?: return .permanent("the backend refused the data's media type (\(error))", status: status)
        case let status? where (400..<500).contains(status): return .permanent("\(error)", status: status)
        default: return .retry("\(error)", after: nil, status: status)
        }
    }

    /// The table: the image's status in Glance × the push's method.
    private mutating func decide(_ image: GlanceImage, date: Date) -> Action {
        let status = image.status ?? ""
        switch (status, method) {
        case ("active", _):
            // An earlier attempt got through before Depot could record it, or someone else
            // uploaded: the hashes tell which.
            return verify(image)
        case ("queued", .upload):
            return .upload
        case ("queued", .glanceDirect):
            return .stageAndImport
        case ("uploading", .glanceDirect):
            // Staged in Glance by an earlier attempt that stopped before the import call.
            return .importStaged
        case ("saving", _), ("importing", _), ("uploading", _):
            if let updated = image.updatedAt, date.timeIntervalSince(updated) > PushQueue.seconds(stuckAfter) {
                return end(.permanent(
                    "image has been \(status) in the backend since \(image["updated_at"]?.stringValue ?? "?") and will not take data; delete it and upload again"))
            }
            return end(.retry("image is \(status) in the backend: an earlier transfer is still running there", after: nil))
        default:
            return end(.permanent("image is \(status) in the backend; it cannot take data"))
        }
    }

    /// Follows Glance's import of the staged bytes until it ends or the wait does.
    private mutating func follow(_ image: GlanceImage, now: C.Instant, deadline: C.Instant) -> Action {
        if image.status == "importing" || image.status == "uploading", now < deadline {
            // Glance leaves an image whose import failed (its format inspection refused the
            // staged bytes, say) `importing` and names the store that failed.
            if let stores = image["os_glance_failed_import"]?.stringValue, !stores.isEmpty {
                return end(.permanent("the backend's import failed for store \(stores) (its log says why; a format refusal is the usual cause)"))
            }
            return .read(.service, after: .milliseconds(500))
        }
        if image.status == "importing" { return end(.retry("the backend is still importing", after: 5)) }
        return verify(image)
    }

    private mutating func verify(_ image: GlanceImage) -> Action {
        phase = .ended
        return .verify(image)
    }

    private mutating func end(_ outcome: Outcome) -> Action {
        phase = .ended
        return .end(outcome)
    }
}

extension PushRecord {
    /// The push after an attempt that ended with `outcome`: done, failed for good, or pending
    /// until `date` plus the wait (`backoff` seconds unless the outcome names one).
    package mutating func end(attempt outcome: PushOutcome, at date: Date, backoff: Double) {
        switch outcome {
        case .done:
            state = .done
            lastError = nil
        case let .permanent(reason, _):
            state = .failed
            lastError = reason
        case let .retry(reason, after, _):
            lastError = reason
            nextAttempt = date.timeIntervalSince1970 + (after ?? backoff)
        }
    }
}
