/// Unsigned integers as decimal ASCII, written straight into bytes: the numbers of header
/// values (`Content-Range`) and of access-log lines on every hit, without a String per number.
public enum DecimalDigits {
    /// The most digits a `UInt64` has (`UInt64.max` is 20 digits long).
    public static let maxCount = 20

    /// Writes `value`'s digits at `out[at...]` and moves `at` past them.
    /// - Precondition: `out` has room for `maxCount` bytes from `at`.
    public static func write(_ value: UInt64, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        var divisor: UInt64 = 1
        while value / divisor >= 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            out[at] = UInt8(ascii: "0") + UInt8(rest / divisor)
            at += 1
            rest %= divisor
            divisor /= 10
        }
    }

    /// Appends `value`'s digits to `bytes`.
    public static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxCount) { buffer in
            var count = 0
            write(value, to: buffer, at: &count)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<count]))
        }
    }
}
