@testable import HTTPSemantics
import Testing

/// The shapes of Hummingbird's FileMiddlewareTests, against a 10 000-byte body.
@Suite struct ByteRangesTests {
    let size: UInt64 = 10_000

    @Test func absentOrForeignUnitsMeanTheWholeBody() {
        #expect(RangeRequest.parse(nil, size: size) == .whole)
        #expect(RangeRequest.parse("items=0-5", size: size) == .whole)
        #expect(RangeRequest.parse("bytes=abc", size: size) == .whole)
        #expect(RangeRequest.parse("bytes=1-2-3", size: size) == .whole)
        #expect(RangeRequest.parse("bytes=-", size: size) == .whole)
        #expect(RangeRequest.parse("bytes=", size: size) == .whole)
        #expect(RangeRequest.parse("bytes=99999999999999999999-", size: size) == .whole)
    }

    @Test func singleRanges() {
        #expect(RangeRequest.parse("bytes=100-3999", size: size) == .ranges([100...3999]))
        #expect(RangeRequest.parse("bytes=-3999", size: size) == .ranges([6001...9999]))
        #expect(RangeRequest.parse("bytes=6000-", size: size) == .ranges([6000...9999]))
        #expect(RangeRequest.parse("bytes=0-0", size: size) == .ranges([0...0]))
        #expect(RangeRequest.parse("bytes=9999-9999", size: size) == .ranges([9999...9999]))
        #expect(RangeRequest.parse("bytes=9000-20000", size: size) == .ranges([9000...9999]), "the end is clamped")
        #expect(RangeRequest.parse("bytes=-20000", size: size) == .ranges([0...9999]), "a suffix longer than the body is all of it")
        #expect(RangeRequest.parse("Bytes = 5-6", size: size) == .ranges([5...6]))
    }

    @Test func unsatisfiableRanges() {
        #expect(RangeRequest.parse("bytes=500-100", size: size) == .unsatisfiable)
        #expect(RangeRequest.parse("bytes=10000-", size: size) == .unsatisfiable)
        #expect(RangeRequest.parse("bytes=10000-10005", size: size) == .unsatisfiable)
        #expect(RangeRequest.parse("bytes=-0", size: size) == .unsatisfiable)
        #expect(RangeRequest.parse("bytes=0-0", size: 0) == .unsatisfiable)
    }

    @Test func multipleRangesAreSortedAndCoalesced() {
        #expect(RangeRequest.parse("bytes=0-9,20-29", size: size) == .ranges([0...9, 20...29]))
        #expect(RangeRequest.parse("bytes=20-29,0-9", size: size) == .ranges([0...9, 20...29]))
        #expect(RangeRequest.parse("bytes=0-9,5-14,15-20", size: size) == .ranges([0...20]))
        #expect(RangeRequest.parse("bytes=0-9, 10000-, -5", size: size) == .ranges([0...9, 9995...9999]))
    }

    @Test func tooManyPartsGetTheWholeBody() {
        let many = (0..<40).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ",")
        #expect(RangeRequest.parse("bytes=" + many, size: size) == .whole)
    }

    @Test func conditionalHeaders() {
        let etag = "\"abc\""
        #expect(ConditionalRequest.noneMatchMatches("\"abc\"", etag: etag))
        #expect(ConditionalRequest.noneMatchMatches("\"x\", \"abc\"", etag: etag))
        #expect(ConditionalRequest.noneMatchMatches("*", etag: etag))
        #expect(ConditionalRequest.noneMatchMatches("W/\"abc\"", etag: etag))
        #expect(!ConditionalRequest.noneMatchMatches("\"abd\"", etag: etag))
        #expect(!ConditionalRequest.noneMatchMatches(nil, etag: etag))
        #expect(ConditionalRequest.ifRangeAllowsRange(nil, etag: etag))
        #expect(ConditionalRequest.ifRangeAllowsRange("\"abc\"", etag: etag))
        #expect(!ConditionalRequest.ifRangeAllowsRange("W/\"abc\"", etag: etag), "If-Range compares strongly")
        #expect(!ConditionalRequest.ifRangeAllowsRange("Wed, 21 Oct 2015 07:28:00 GMT", etag: etag))
        #expect(!ConditionalRequest.ifRangeAllowsRange("\"abc\"", etag: nil))
    }
}

/// `Content-Range` of a single range, its digits written straight into the string, against
/// the interpolated text.
@Suite struct ContentRangeTextTests {
    @Test func contentRangeIsTheInterpolatedText() {
        let edges: [UInt64] = [0, 1, 9, 10, 99, 100, 4095, 4096, 999_999_999, 1_000_000_000, 10_000_000_000_000_000_000, UInt64.max - 1, UInt64.max]
        var generator = SystemRandomNumberGenerator()
        let random = (0..<500).map { _ in generator.next() >> UInt64.random(in: 0...63, using: &generator) }
        let values = edges + random
        for (i, a) in values.enumerated() {
            let b = values[(i * 7 + 3) % values.count]
            let size = values[(i * 13 + 5) % values.count]
            let range = min(a, b)...max(a, b)
            #expect(ResponsePlan.contentRange(range, size: size) == "bytes \(range.lowerBound)-\(range.upperBound)/\(size)")
        }
    }
}
