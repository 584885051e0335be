/// Unsigned integers as decimal ASCII, written straight into bytes: the numbers of header
/// values (`Content-Range`) and of access-log lines on every hit, without a String per number.
public enum DecimalDigits {
    /// The most digits a `UInt64` has (`UInt64.max` is 20 digits long).
    public static let maxCount = 20

    /// Writes `value`'s digits at `out[at...]` and moves `at` past them.
    /// - Precondition: `out` has room for `maxCount` bytes from `at`.
    public static func write(_ value: UInt64, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        // Divisions by the constant 10 only, which compile to a multiply: dividing by a
        // running power of ten took a `div` (tens of cycles) per digit, several numbers a hit.
        var count = 1
        var probe = value
        while probe >= 10 {
            probe /= 10
            count += 1
        }
        var rest = value
        var index = at + count
        repeat {
            index -= 1
            let quotient = rest / 10
            out[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest &- quotient &* 10)
            rest = quotient
        } while rest > 0
        at += count
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
