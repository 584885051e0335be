import Testing

@testable import Proxy

/// The access log's `duration_ms`: milliseconds with one decimal, rounded half up, computed
/// here from the duration's own seconds and attoseconds (1 ms = 10^15 attoseconds).
@Suite struct AccessLogDurationTests {
    @Test(arguments: [
        (Duration.zero, "0.0"),
        (Duration.microseconds(49), "0.0"),
        (Duration.microseconds(50), "0.1"),
        (Duration.microseconds(12_345), "12.3"),
        (Duration.microseconds(12_350), "12.4"),
        (Duration.milliseconds(999) + .microseconds(960), "1000.0"),
        (Duration.seconds(3) + .microseconds(7_049), "3007.0"),
        (Duration.seconds(86_400), "86400000.0"),
    ])
    func millisecondsHaveOneDecimal(duration: Duration, expected: String) {
        #expect(AccessLog.milliseconds(duration) == expected)
    }

    @Test func aNegativeDurationStillPrints() {
        #expect(AccessLog.milliseconds(.microseconds(-1_500)) == "-1.5")
    }
}

/// The line of a hit answered on the event loop, its numbers written as digits, against the
/// same line built the general way from Swift's own decimal text.
@Suite struct AccessLogHitLineTests {
    @Test func aHitsLineIsTheGeneralLineByteForByte() {
        let numbers: [UInt64] = [0, 1, 9, 10, 99, 100, 4096, 65_535, 1 << 32, 999_999_999_999, UInt64.max - 1, UInt64.max]
        let durations: [Duration] = [
            .zero, .microseconds(49), .microseconds(50), .microseconds(12_345), .milliseconds(999) + .microseconds(960), .seconds(86_400),
            .microseconds(-1_500), .seconds(Int64.max / 9_000), .nanoseconds(49_999), .nanoseconds(50_000), .nanoseconds(149_999),
            .nanoseconds(150_000), .seconds(9_223_372_036), .nanoseconds(Int64.max), .nanoseconds(Int64.random(in: 0...Int64.max)),
        ]
        var generator = SystemRandomNumberGenerator()
        let randomNumbers = (0..<200).map { _ in generator.next() >> UInt64.random(in: 0...63, using: &generator) }
        for (body, duration) in zip(numbers + randomNumbers, (durations + durations).cycled(to: numbers.count + randomNumbers.count)) {
            for (method, uri, status) in [("GET", "/v2/images/0b4e/file", UInt(206)), ("HEAD", "/v2/images/x/file?a=b", 200), ("GET", "/caf\u{301}?", 416)] {
                let path = Router.pathPart(Substring(uri))
                // The hit's line is written from nanoseconds; where a duration has too many for an Int64, from the most it can have.
                let (seconds, attoseconds) = duration.components
                let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
                let expected = nanoseconds == Int64.max ? AccessLog.milliseconds(.nanoseconds(Int64.max)) : AccessLog.milliseconds(duration)
                var general: [UInt8] = []
                AccessLog.appendFields(
                    "\(method) \(path) \(status)",
                    metadata: ["bytes": "\(body)", "cache": "hit", "duration_ms": expected, "path": "fast"], to: &general)
                var hit: [UInt8] = []
                AccessLog.appendHitFields(method: method, path: path, status: status, bytes: body, nanoseconds: nanoseconds, to: &hit)
                #expect(hit == general, "\(String(decoding: hit, as: UTF8.self)) != \(String(decoding: general, as: UTF8.self))")
            }
        }
    }
}

extension Array {
    /// The array repeated to `count` elements.
    fileprivate func cycled(to count: Int) -> [Element] { (0..<count).map { self[$0 % self.count] } }
}
