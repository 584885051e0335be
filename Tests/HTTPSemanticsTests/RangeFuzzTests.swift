import DepotTestSupport
import PropertyBased
import Testing

@testable import HTTPSemantics

/// Property-based fuzzing of `Range`, `If-None-Match` and `If-Range` parsing against
/// independent reference implementations of RFC 9110 section 14 and 13.1 (`RangeReference`,
/// `ConditionalReference`), on swift-property-based: a failing input is shrunk and reported
/// with its seed; to replay it, add the `.fixedSeed("…")` the issue names to the `@Test`
/// (see `Sources/DepotTestSupport/FuzzGenerators.swift`).
@Suite struct RangeFuzzTests {
    static let inputs = 50_000

    @Test func rangeHeadersMatchTheReference() async {
        let input = Generator(run: { RangeInput.generate(&$0) }, shrink: { RangeInput.shrink($0) })
        await propertyCheck(count: Self.inputs, input: input) { input in
            if let failure = RangeCheck.failure(input.header, size: input.size) { Issue.record("\(failure)") }
        }
    }

    /// A GET's plan reads its `Range` as `RangeRequest.parse` does: the plan takes the
    /// `bytes=FIRST-LAST` form through `parseOne`, without a list, and every other form
    /// through `parse`, so the two must agree on every header.
    @Test func aPlanReadsTheRangeAsParseDoes() async {
        let input = Generator(run: { RangeInput.generate(&$0) }, shrink: { RangeInput.shrink($0) })
        await propertyCheck(count: Self.inputs / 5, input: input) { input in
            let representation = Representation(size: input.size, entityTag: "\"e\"", contentMD5: nil)
            let plan = ResponsePlan(RepresentationRequest(method: .get, range: input.header), for: representation)
            let expected: (status: Int, ranges: [ClosedRange<UInt64>])
            let parsed = input.header.map { RangeRequest.parse($0, size: input.size) } ?? .whole
            switch parsed {
            case .whole: expected = (200, input.size == 0 ? [] : [0...(input.size - 1)])
            case let .ranges(list):
                // Several ranges whose multipart body is too long to state are answered whole.
                let unstatable = list.count > 1
                    && MultipartByteRanges(ranges: list, size: input.size, boundarySeed: representation.entityTag).contentLength == nil
                expected = unstatable ? (200, [0...(input.size - 1)]) : (206, list)
            case .unsatisfiable: expected = (416, [])
            }
            let context = "Range: \(input.header ?? "none") for \(input.size) bytes"
            #expect(plan.status == expected.status && plan.ranges == expected.ranges, "\(context)")
            switch (parsed, plan.framing) {
            case (.whole, .whole): #expect(plan.bodyLength == input.size, "\(context)")
            case let (.ranges(list), .range(range)) where list.count == 1:
                #expect(range == list[0] && plan.bodyLength == list[0].byteCount, "\(context)")
            case let (.ranges(list), .multipart(_, length)) where list.count > 1: #expect(plan.bodyLength == length, "\(context)")
            case let (.ranges(list), .whole) where list.count > 1 && expected.status == 200: #expect(plan.bodyLength == input.size, "\(context)")
            case let (.unsatisfiable, .unsatisfiable(length)): #expect(plan.bodyLength == length, "\(context)")
            default: Issue.record("\(context): framing \(plan.framing) for \(parsed)")
            }
            // A HEAD's plan never reads the range: the whole representation, no body.
            let head = ResponsePlan(RepresentationRequest(method: .head, range: input.header), for: representation)
            #expect(head.status == 200 && head.framing == .whole && head.body.isEmpty, "HEAD, \(context)")
            var walked: [ResponsePlan.Segment] = []
            plan.forEachSegment { walked.append($0) }
            #expect(walked == plan.body)
        }
    }

    /// A plan made from a `Range` field's bytes (a connection's repeated head) is the plan
    /// made from a `String` of them, also when the bytes are not UTF-8 (the `String` has
    /// U+FFFD where they are not).
    @Test func aPlanFromTheFieldsBytesIsThePlanFromItsString() async {
        let input = Generator(
            run: { rng -> ([UInt8]?, UInt64) in
                let base = RangeInput.generate(&rng)
                var bytes = Array((base.header ?? "").utf8)
                if rng.chance(0.5) {
                    for _ in 0..<rng.int(1...3) { bytes.insert(UInt8(rng.int(0x80...0xFF)), at: rng.int(0...bytes.count)) }
                }
                return (base.header == nil ? nil : bytes, base.size)
            },
            shrink: { _ in [] as [([UInt8]?, UInt64)] })
        await propertyCheck(count: Self.inputs / 5, input: input) { input in
            let (bytes, size) = input
            let representation = Representation(size: size, entityTag: "\"e\"", contentMD5: nil)
            let viaString = ResponsePlan(
                RepresentationRequest(method: .get, range: bytes.map { String(decoding: $0, as: UTF8.self) }), for: representation)
            let viaBytes: ResponsePlan
            if let bytes {
                viaBytes = bytes.withUnsafeBytes { ResponsePlan(RepresentationRequest(method: .get), range: $0, for: representation) }
            } else {
                viaBytes = ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-0"), range: nil, for: representation)
            }
            #expect(viaBytes == viaString, "Range bytes \(bytes.map { "\($0)" } ?? "none") for \(size) bytes")
        }
    }

    @Test func coalescingMatchesTheReferenceUnion() async {
        let input = Generator(run: { CoalesceGenerator.ranges(&$0) }, shrink: { Shrink.omitSingleElement(from: $0) })
        await propertyCheck(count: Self.inputs / 4, input: input) { ranges in
            #expect(RangeRequest.coalesce(ranges) == RangeReference.union(ranges), "coalesce(\(ranges))")
        }
    }

    @Test func conditionalHeadersMatchTheReference() async {
        let input = Generator(run: { ConditionalInput.generate(&$0) }, shrink: { ConditionalInput.shrink($0) })
        await propertyCheck(count: Self.inputs, input: input) { input in
            if let failure = ConditionalCheck.failure(input.header, etag: input.etag) { Issue.record("\(failure)") }
        }
    }

    /// Seeds found by fuzzing, kept as plain regression cases.
    @Test func regressions() {
        // A digit with a combining mark is one Character that sorts between "0" and "9": it
        // was taken for a digit and `UInt64(_:)!` trapped, crashing the server (the fast path
        // parses Range on the event loop).
        #expect(RangeRequest.parse("bytes=5\u{301}-", size: 100) == .whole)
        #expect(RangeRequest.parse("bytes=0-1\u{FE0F}\u{20E3}", size: 100) == .whole)
        #expect(RangeRequest.parse("bytes=-0\u{308}", size: 100) == .whole)
        // A zero-length body has no byte a 206 could carry; a non-empty suffix is satisfiable
        // (RFC 9110 14.1.1), so the answer is the whole (empty) body, not 416.
        #expect(RangeRequest.parse("bytes=-5", size: 0) == .whole)
        #expect(RangeRequest.parse("bytes=0-", size: 0) == .unsatisfiable)
        #expect(RangeRequest.parse("bytes=-0", size: 0) == .unsatisfiable)
        // Several ranges of a representation within a few hundred bytes of 2^64 make a
        // multipart body longer than a Content-Length can state: summing its length trapped
        // (found by aPlanFromTheFieldsBytesIsThePlanFromItsString). It is answered whole.
        let huge = Representation(size: UInt64.max, entityTag: "\"e\"", contentMD5: nil)
        let plan = ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-0,2-"), for: huge)
        #expect(plan.status == 200 && plan.framing == .whole && plan.bodyLength == UInt64.max && plan.ranges == [0...(UInt64.max - 1)])
        let stated = ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-0,2-3"), for: huge)
        #expect(stated.status == 206 && stated.ranges == [0...0, 2...3])
    }
}
