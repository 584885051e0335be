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
        guard var header else { return .whole }
        return header.withUTF8 { parse(RangeBytes(bytes: $0), size: size) }
    }

    /// Works on the header's UTF-8 bytes: every byte the grammar names is ASCII, and a
    /// non-ASCII byte (a combining mark after a digit, say) is never a digit, space or
    /// separator, so a header that has one is unparseable here as it is Character by
    /// Character. Bytes, not Characters: this runs on every range hit.
    static func parse(_ header: RangeBytes, size: UInt64) -> RangeRequest {
        switch parseOneRange(header, size: size) {
        case let .satisfiable(range): return .ranges([range])
        case .unsatisfiable: return .unsatisfiable
        case nil: break
        }
        let trimmed = header.trimmed
        guard let equals = trimmed.firstIndex(of: UInt8(ascii: "=")),
              trimmed.prefix(upTo: equals).trimmed.equalsLowercased("bytes")
        else { return .whole }
        let set = trimmed.suffix(after: equals)
        guard set.count(of: UInt8(ascii: ",")) + 1 <= maximumParts else { return .whole }
        var satisfiable: [ClosedRange<UInt64>] = []
        var sawInvertedRange = false
        var sawNonEmptySuffix = false
        var rest = set
        while true {
            let comma = rest.firstIndex(of: UInt8(ascii: ","))
            let spec = (comma.map { rest.prefix(upTo: $0) } ?? rest).trimmed
            guard let dash = spec.firstIndex(of: UInt8(ascii: "-")) else { return .whole }
            let first = spec.prefix(upTo: dash), last = spec.suffix(after: dash)
            guard first.isDigits, last.isDigits, !(first.isEmpty && last.isEmpty), first.length <= 19, last.length <= 19
            else { return .whole }
            if first.isEmpty {
                // Suffix: the last N bytes.
                let count = last.number
                if count > 0 && size > 0 {
                    satisfiable.append((size - min(count, size))...(size - 1))
                }
                sawNonEmptySuffix = sawNonEmptySuffix || count > 0
            } else {
                let start = first.number
                if !last.isEmpty {
                    let end = last.number
                    if end < start {
                        sawInvertedRange = true
                    } else if start < size {
                        satisfiable.append(start...min(end, size - 1))
                    }
                } else if start < size {
                    satisfiable.append(start...(size - 1))
                }
            }
            guard let comma else { break }
            rest = rest.suffix(after: comma)
        }
        if sawInvertedRange { return .unsatisfiable }
        // A non-empty suffix of a zero-length body is satisfiable (RFC 9110 14.1.1), but no
        // 206 can carry zero bytes: the whole, empty body.
        if satisfiable.isEmpty { return size == 0 && sawNonEmptySuffix ? .whole : .unsatisfiable }
        return satisfiable.count == 1 ? .ranges(satisfiable) : .ranges(coalesce(satisfiable))
    }

    /// The answer to `bytes=FIRST-LAST` written without white space or other parts (both
    /// numbers of 1 to 19 digits), the form range clients send (qemu's curl driver, segmented
    /// downloads), read without the general parse's trimming, counting and list: that took
    /// about 1,200 instructions of a range hit. Nil for any other form, which the general
    /// parse reads; for this form both give the same answer (`RangeFuzzTests` holds both to a
    /// reference).
    private static func parseOneRange(_ header: RangeBytes, size: UInt64) -> OneRange? {
        guard let equals = header.firstIndex(of: UInt8(ascii: "=")), header.prefix(upTo: equals).equalsLowercased("bytes") else { return nil }
        let spec = header.suffix(after: equals)
        guard let dash = spec.firstIndex(of: UInt8(ascii: "-")) else { return nil }
        let first = spec.prefix(upTo: dash), last = spec.suffix(after: dash)
        guard !first.isEmpty, !last.isEmpty, first.length <= 19, last.length <= 19, first.isDigits, last.isDigits else { return nil }
        let (start, end) = (first.number, last.number)
        if end < start { return .unsatisfiable }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start...min(end, size - 1))
    }

    /// What a header of the form `bytes=FIRST-LAST` asks for: `parse`'s answer for it, the
    /// range held as itself rather than in a list.
    enum OneRange: Equatable {
        case satisfiable(ClosedRange<UInt64>)
        case unsatisfiable
    }

    /// `parse`'s answer when `header` has the form `bytes=FIRST-LAST` (see `parseOneRange`);
    /// nil for any other form, which `parse` reads.
    static func parseOne(_ header: RangeBytes, size: UInt64) -> OneRange? { parseOneRange(header, size: size) }

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

/// A slice of a header's bytes (valid while the header's storage is).
struct RangeBytes {
    let bytes: UnsafeBufferPointer<UInt8>
    var start = 0
    var end: Int

    init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.end = bytes.count
    }

    private init(bytes: UnsafeBufferPointer<UInt8>, start: Int, end: Int) {
        self.bytes = bytes
        self.start = start
        self.end = end
    }

    var isEmpty: Bool { start == end }
    var length: Int { end - start }

    /// Without spaces and tabs at either end.
    var trimmed: RangeBytes {
        var low = start, high = end
        while low < high, bytes[low] == 0x20 || bytes[low] == 0x09 { low += 1 }
        while high > low, bytes[high - 1] == 0x20 || bytes[high - 1] == 0x09 { high -= 1 }
        return RangeBytes(bytes: bytes, start: low, end: high)
    }

    func firstIndex(of byte: UInt8) -> Int? {
        var index = start
        while index < end {
            if bytes[index] == byte { return index }
            index += 1
        }
        return nil
    }

    func count(of byte: UInt8) -> Int {
        var count = 0
        for index in start..<end where bytes[index] == byte { count += 1 }
        return count
    }

    func prefix(upTo index: Int) -> RangeBytes { RangeBytes(bytes: bytes, start: start, end: index) }
    func suffix(after index: Int) -> RangeBytes { RangeBytes(bytes: bytes, start: index + 1, end: end) }

    var isDigits: Bool {
        for index in start..<end where bytes[index] < 0x30 || bytes[index] > 0x39 { return false }
        return true
    }

    /// The decimal value of at most 19 digits (which always fits).
    var number: UInt64 {
        var value: UInt64 = 0
        for index in start..<end { value = value * 10 + UInt64(bytes[index] - 0x30) }
        return value
    }

    /// Whether the bytes are `word` (lowercase ASCII) in any case.
    func equalsLowercased(_ word: StaticString) -> Bool {
        guard length == word.utf8CodeUnitCount else { return false }
        let expected = word.utf8Start
        for offset in 0..<length {
            let byte = bytes[start + offset]
            let lowered = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            if lowered != expected[offset] { return false }
        }
        return true
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var start = startIndex, end = endIndex
        while start < end, set.contains(self[start]) { start = index(after: start) }
        while end > start, set.contains(self[index(before: end)]) { end = index(before: end) }
        return String(self[start..<end])
    }
}
