/// What a `Range` header asks of a representation of a known size (RFC 9110 section 14).
public enum RangeRequest: Equatable, Sendable {
    /// No range (absent, another unit, unparseable, or too many parts): send the whole body.
    case whole
    /// One or more satisfiable ranges, inclusive, sorted and coalesced.
    case ranges([ClosedRange<UInt64>])
    /// Nothing the header asks for exists: 416 with `Content-Range: bytes */size`.
    case unsatisfiable

    /// More parts than this are answered with the whole body, as RFC 9110 allows: a request
    /// for thousands of tiny ranges is an attack, not a download.
    public static let maximumParts = 32

    /// Parses a `Range` header for a body of `size` bytes.
    public static func parse(_ header: String?, size: UInt64) -> RangeRequest {
        guard let header else { return .whole }
        let trimmed = header.trimmingCharacters(in: " \t")
        guard let equals = trimmed.firstIndex(of: "="),
              trimmed[..<equals].trimmingCharacters(in: " \t").lowercased() == "bytes"
        else { return .whole }
        let specs = trimmed[trimmed.index(after: equals)...].split(separator: ",", omittingEmptySubsequences: false)
        guard !specs.isEmpty, specs.count <= maximumParts else { return .whole }
        var satisfiable: [ClosedRange<UInt64>] = []
        var sawInvertedRange = false
        var sawNonEmptySuffix = false
        for rawSpec in specs {
            let spec = rawSpec.trimmingCharacters(in: " \t")
            guard let dash = spec.firstIndex(of: "-") else { return .whole }
            let first = spec[..<dash], last = spec[spec.index(after: dash)...]
            guard first.allSatisfy(\.isASCIIDigit), last.allSatisfy(\.isASCIIDigit), !(first.isEmpty && last.isEmpty),
                  first.count <= 19, last.count <= 19
            else { return .whole }
            if first.isEmpty {
                // Suffix: the last N bytes.
                let count = UInt64(last)!
                if count > 0 && size > 0 {
                    satisfiable.append((size - min(count, size))...(size - 1))
                }
                sawNonEmptySuffix = sawNonEmptySuffix || count > 0
            } else {
                let start = UInt64(first)!
                if let end = UInt64(last) {
                    if end < start {
                        sawInvertedRange = true
                        continue
                    }
                    if start < size { satisfiable.append(start...min(end, size - 1)) }
                } else if start < size {
                    satisfiable.append(start...(size - 1))
                }
            }
        }
        if sawInvertedRange { return .unsatisfiable }
        // A non-empty suffix of a zero-length body is satisfiable (RFC 9110 14.1.1), but no
        // 206 can carry zero bytes: the whole, empty body.
        if satisfiable.isEmpty { return size == 0 && sawNonEmptySuffix ? .whole : .unsatisfiable }
        return .ranges(coalesce(satisfiable))
    }

    /// Sorts ranges and merges those that overlap or touch.
    static func coalesce(_ ranges: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var merged: [ClosedRange<UInt64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, range.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }
}

extension Character {
    /// One of 0-9. Not `("0"..."9").contains(self)`: a digit followed by a combining mark
    /// ("5\u{301}", a keycap) is one Character that sorts between "0" and "9".
    var isASCIIDigit: Bool { asciiValue.map { (48...57).contains($0) } ?? false }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var start = startIndex, end = endIndex
        while start < end, set.contains(self[start]) { start = index(after: start) }
        while end > start, set.contains(self[index(before: end)]) { end = index(before: end) }
        return String(self[start..<end])
    }
}
