import Testing

@testable import HTTPSemantics

/// `DecimalDigits` writes what `String(value)` prints, at every length and across every power
/// of ten, where a digit-count error would show.
@Suite struct DecimalDigitsTests {
    static func written(_ value: UInt64) -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: DecimalDigits.maxCount + 2) { buffer in
            buffer.initialize(repeating: UInt8(ascii: "x"))
            var at = 1
            DecimalDigits.write(value, to: buffer, at: &at)
            #expect(buffer[0] == UInt8(ascii: "x") && buffer[at] == UInt8(ascii: "x"), "wrote outside its digits")
            return String(decoding: buffer[1..<at], as: UTF8.self)
        }
    }

    @Test func everyLengthAndEveryPowerOfTen() {
        var values: [UInt64] = Array(0...1_000) + [UInt64.max, UInt64.max - 1, 12_345_678_901_234_567_890]
        var power: UInt64 = 1
        for _ in 0..<19 {
            power *= 10
            values += [power - 1, power, power + 1]
        }
        var rng = SystemRandomNumberGenerator()
        values += (0..<1_000).map { _ in UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng) }
        for value in values {
            #expect(Self.written(value) == String(value))
            var appended: [UInt8] = [1]
            DecimalDigits.append(value, to: &appended)
            #expect(appended == [1] + Array(String(value).utf8))
        }
    }
}
