import Foundation

/// Where a download stands across the exchanges it takes: the next byte wanted, the end once
/// known, the first head (the one the consumer sees) and the retries spent. A value: the
/// download drives it with what each exchange said.
struct ResumePlan: Sendable, Equatable {
    let url: String
    /// The range the caller asked for, absolute and inclusive; nil for the whole image.
    let asked: ClosedRange<UInt64>?
    let maxRetries: Int
    /// Absolute offset of the next byte wanted.
    private(set) var next: UInt64
    /// Absolute end (exclusive), once known.
    private(set) var end: UInt64?
    private(set) var first: DownloadHead?
    private(set) var delivered: UInt64 = 0
    private(set) var retries = 0

    init(url: String, range: ClosedRange<UInt64>?, maxRetries: Int) {
        self.url = url
        asked = range
        self.maxRetries = maxRetries
        next = range?.lowerBound ?? 0
        end = range.map { $0.upperBound + 1 }
    }

    /// The `Range` for the next exchange, in libcurl's form (`start-end`, `start-`); nil asks for
    /// the whole image (nothing asked for and nothing received yet).
    var range: String? {
        guard asked != nil || delivered > 0 else { return nil }
        return end.map { "\(next)-\($0 - 1)" } ?? "\(next)-"
    }

    /// Checks a 2xx head against what was asked for, and learns the end offset. Returns the
    /// head the consumer sees: the first exchange's, also when this one resumed.
    ///
    /// - Throws: `.invalidResponse` when the head does not continue where the bytes stopped.
    mutating func accept(_ head: HTTPResponseHead) throws(GlanceError) -> DownloadHead {
        let length = head.header("Content-Length").flatMap { UInt64($0) }
        var result = DownloadHead(status: head.status, length: length, totalSize: nil, range: nil, contentMD5: head.header("Content-MD5"), headers: head)
        if head.status == 206 {
            guard let value = head.header("Content-Range"), let parsed = parseContentRange(value) else {
                throw .invalidResponse(reason: "206 without a valid Content-Range", url: url)
            }
            guard parsed.range.lowerBound == next else {
                throw .invalidResponse(reason: "asked for bytes from \(next), got \(value)", url: url)
            }
            // A last byte at 2^64 - 1 leaves no end to state (the sum trapped).
            guard parsed.range.upperBound < .max else {
                throw .invalidResponse(reason: "a Content-Range past the largest size (\(value))", url: url)
            }
            if end == nil { end = parsed.range.upperBound + 1 }
            result.totalSize = parsed.total
            result.range = parsed.range
        } else {
            if range != nil && next != 0 {
                throw .invalidResponse(reason: "asked for a range from \(next), got the whole image (\(head.status))", url: url)
            }
            if end == nil { end = length }
            result.totalSize = length
        }
        if let first { return first }
        first = result
        return result
    }

    mutating func received(_ count: Int) {
        next += UInt64(count)
        delivered += UInt64(count)
    }

    /// After an exchange ended cleanly: nil when every byte announced arrived.
    var shortfall: GlanceError? {
        guard let end, next != end else { return nil }
        return .sizeMismatch(expected: end - (asked?.lowerBound ?? 0), received: delivered, url: url)
    }

    /// Whether `failure` is worth another exchange; spends a retry when it is.
    mutating func retry(after failure: GlanceError) -> Bool {
        guard failure.isTransient, retries < maxRetries else { return false }
        retries += 1
        return true
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
func parseContentRange(_ value: String) -> (range: ClosedRange<UInt64>, total: UInt64?)? {
    let trimmed = value.trimmingCharacters(in: .whitespaces)
    guard trimmed.lowercased().hasPrefix("bytes ") else { return nil }
    let spec = trimmed.dropFirst(6)
    let parts = spec.split(separator: "/", maxSplits: 1)
    guard parts.count == 2 else { return nil }
    let bounds = parts[0].split(separator: "-", maxSplits: 1)
    guard bounds.count == 2, let start = UInt64(bounds[0]), let end = UInt64(bounds[1]), start <= end else { return nil }
    let total = parts[1] == "*" ? nil : UInt64(parts[1])
    if parts[1] != "*" && total == nil { return nil }
    return (start...end, total)
}
