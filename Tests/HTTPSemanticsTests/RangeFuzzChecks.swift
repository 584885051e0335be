import DepotTestSupport

@testable import HTTPSemantics

enum ConditionalCheck {
    static func failure(_ header: String, etag: String) -> String? {
        let noneMatch = ConditionalRequest.noneMatchMatches(header, etag: etag)
        switch ConditionalReference.noneMatch(header, etag: etag) {
        case let .valid(expected):
            if noneMatch != expected {
                return "If-None-Match \(fuzzQuote(header)) against \(etag): got \(noneMatch), RFC 9110 13.1.2 says \(expected)"
            }
        case .invalid:
            // An invalid field may be ignored; but a match must come from the tag or "*".
            if noneMatch && !header.contains(etag) && !header.contains("*") {
                return "If-None-Match \(fuzzQuote(header)) matched \(etag) without containing it"
            }
        }
        let ifRange = ConditionalRequest.ifRangeAllowsRange(header, etag: etag)
        let expectedIfRange = ConditionalReference.ifRangeAllows(header, etag: etag)
        if ifRange != expectedIfRange {
            return "If-Range \(fuzzQuote(header)) against \(etag): got \(ifRange), strong comparison says \(expectedIfRange)"
        }
        // No validator at all (a miss): If-Range never allows the range.
        if ConditionalRequest.ifRangeAllowsRange(header, etag: nil) { return "If-Range \(fuzzQuote(header)) allowed a range without an entity tag" }
        return nil
    }
}

enum RangeCheck {
    /// nil when `RangeRequest.parse` agrees with the reference and keeps its promises.
    static func failure(_ header: String?, size: UInt64) -> String? {
        let actual = RangeRequest.parse(header, size: size)
        let (expected, _) = RangeReference.evaluate(header, size: size)
        if actual != expected { return "parse gave \(actual), the reference (RFC 9110 14 + Depot's policies) gives \(expected)" }
        if case let .ranges(list) = actual {
            // The promises, checked on their own: in bounds, sorted, disjoint and not touching.
            if list.isEmpty { return "an empty list of ranges" }
            if list.count > RangeRequest.maximumParts { return "\(list.count) ranges, more than the maximum" }
            var total: UInt64 = 0
            for (index, range) in list.enumerated() {
                if range.upperBound >= size { return "range \(range) is not within 0..<\(size)" }
                if index > 0 && range.lowerBound <= list[index - 1].upperBound + 1 {
                    return "ranges \(list[index - 1]) and \(range) overlap, touch or are out of order"
                }
                total += range.upperBound - range.lowerBound + 1
            }
            if total > size { return "the ranges cover \(total) bytes of \(size)" }
        }
        return nil
    }
}
