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
        #expect(DepotHandler.milliseconds(duration) == expected)
    }

    @Test func aNegativeDurationStillPrints() {
        #expect(DepotHandler.milliseconds(.microseconds(-1_500)) == "-1.5")
    }
}
