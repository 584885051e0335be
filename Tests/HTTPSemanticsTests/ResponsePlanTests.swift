import HTTPSemantics
import Testing

/// The plan every serving path follows, against RFC 9110's rules, and the cursor that turns
/// in-order representation bytes into exactly the planned body.
@Suite struct ResponsePlanTests {
    let tag = "\"abc\""
    var image: Representation { Representation(size: 10_000, entityTag: tag, contentMD5: "0123") }

    @Test func headIgnoresRangeAndStatesTheFullLength() {
        // RFC 9110 14.2: Range is defined for GET only.
        let plan = ResponsePlan(RepresentationRequest(method: .head, range: "bytes=0-99"), for: image)
        #expect(plan.status == 200)
        #expect(plan.header("content-length") == "10000")
        #expect(plan.header("content-range") == nil)
        #expect(plan.body.isEmpty)
        #expect(ResponsePlan(RepresentationRequest(method: .head, range: "bytes=99999-"), for: image).status == 200)
    }

    @Test func ifNoneMatchComesFirstAndKeepsTheValidators() {
        let plan = ResponsePlan(RepresentationRequest(method: .get, range: "bytes=99999-", ifNoneMatch: "W/" + tag), for: image)
        #expect(plan.status == 304)
        #expect(plan.header("etag") == tag)
        #expect(plan.header("content-type") == nil && plan.header("content-length") == nil)
        #expect(ResponsePlan(RepresentationRequest(method: .get, ifNoneMatch: "*"), for: Representation(size: 5, entityTag: nil, contentMD5: nil)).status == 304)
        #expect(ResponsePlan(RepresentationRequest(method: .get, ifNoneMatch: tag), for: Representation(size: 5, entityTag: nil, contentMD5: nil)).status == 200)
    }

    @Test func ifRangeNeedsAStrongMatch() {
        #expect(ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-9", ifRange: tag), for: image).status == 206)
        for other in ["W/" + tag, "\"x\"", "Wed, 21 Oct 2015 07:28:00 GMT", "junk"] {
            #expect(ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-9", ifRange: other), for: image).status == 200, "\(other)")
        }
    }

    @Test func unsatisfiableRangesGet416WithTheCurrentLength() {
        let plan = ResponsePlan(RepresentationRequest(method: .get, range: "bytes=10000-"), for: image)
        #expect(plan.status == 416)
        #expect(plan.header("content-range") == "bytes */10000")
        #expect(plan.header("content-type") == "application/json")
        #expect(plan.bodyLength == UInt64(plan.header("content-length")!))
        #expect(plan.ranges.isEmpty)
    }

    @Test func severalRangesAreOneMultipartBodyWithAStableBoundary() {
        let request = RepresentationRequest(method: .get, range: "bytes=0-9,9990-9999")
        let plan = ResponsePlan(request, for: image)
        #expect(plan.status == 206)
        #expect(plan.ranges == [0...9, 9990...9999])
        #expect(plan == ResponsePlan(request, for: image), "the same representation gets the same boundary")
        let length = plan.body.reduce(0) { total, segment in
            switch segment {
            case let .literal(bytes): total + bytes.count
            case let .representation(range): total + Int(range.byteCount)
            }
        }
        #expect(String(length) == plan.header("content-length"))
        #expect(plan.carriesLastByte(ofSize: 10_000))
        #expect(!ResponsePlan(RepresentationRequest(method: .get, range: "bytes=0-9"), for: image).carriesLastByte(ofSize: 10_000))
    }

    @Test func theCursorMakesThePlannedBodyFromAnySplitOfTheBytes() {
        let content = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var generator = SystemRandomNumberGenerator()
        for header in ["bytes=0-9,9990-9999", "bytes=100-", "bytes=-1", "bytes=5-5,7-7,9000-9100", "bytes=0-"] {
            let plan = ResponsePlan(RepresentationRequest(method: .get, range: header), for: image)
            var expected: [UInt8] = []
            for segment in plan.body {
                switch segment {
                case let .literal(bytes): expected += bytes
                case let .representation(range): expected += content[Int(range.lowerBound)...Int(range.upperBound)]
                }
            }
            for _ in 0..<50 {
                var cursor = BodyCursor(plan)
                var produced: [UInt8] = []
                var offset = 0
                while offset < content.count {
                    let count = min(content.count - offset, Int.random(in: 1...3000, using: &generator))
                    for piece in cursor.feed(content[offset..<(offset + count)], at: UInt64(offset)) { produced += piece }
                    offset += count
                }
                #expect(cursor.isFinished)
                #expect(produced == expected, "\(header)")
            }
        }
    }
}
