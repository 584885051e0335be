import PropertyBased

// What Depot's fuzz suites add to swift-property-based: the random choices their grammar
// generators are written with, the classic byte mutations, a shrinker for generated text and
// bytes, and a quoting that shows control characters. Running, seeding and shrinking are the
// library's `propertyCheck`.
//
// Replaying a failure: the failing test's issue says "Add `.fixedSeed("…")` to the Test to
// reproduce this issue"; add that trait to the `@Test` and run it alone
// (`swift test --filter NAME`). The library then runs that one input, shrinks it again and
// reports it (and, by design, records an issue even when it passes: remove the trait after).

// Written on `next()` alone: the standard library's generic `random(in:using:)` is several
// times slower when called from unspecialized (debug) generic code, and the suites draw
// millions of numbers.
extension RandomNumberGenerator {
    /// Uniform in `0..<n` (n > 0); Lemire's multiply-shift, its bias irrelevant here.
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// Uniform in `range`.
    public mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) * 0x1p-53 < p }

    public mutating func pick<C: Collection>(_ items: C) -> C.Element {
        items[items.index(items.startIndex, offsetBy: below(items.count))]
    }

    /// Picks by weight: `[(3, a), (1, b)]` gives `a` three times as often.
    public mutating func weighted<T>(_ choices: [(Int, T)]) -> T {
        var roll = below(choices.reduce(0) { $0 + $1.0 })
        for (weight, value) in choices {
            if roll < weight { return value }
            roll -= weight
        }
        return choices[choices.count - 1].1
    }

    /// A size skewed towards small values: mostly under 16, sometimes up to `max`.
    public mutating func smallCount(max: Int) -> Int {
        switch below(10) {
        case 0..<6: return below(Swift.min(max, 4) + 1)
        case 6..<9: return below(Swift.min(max, 16) + 1)
        default: return below(max + 1)
        }
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = next()
            for _ in 0..<Swift.min(8, count - index) {
                out[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return out
    }
}

/// Byte-level mutations of a seed input (the classic fuzzer moves), optionally biased towards
/// the `interesting` byte strings of the format (delimiters, digits, quotes...).
public func mutate(_ input: [UInt8], rng: inout some RandomNumberGenerator, rounds: Int, interesting: [[UInt8]] = []) -> [UInt8] {
    var bytes = input
    for _ in 0..<rounds {
        let position = bytes.isEmpty ? 0 : rng.below(bytes.count + 1)
        switch rng.below(interesting.isEmpty ? 8 : 10) {
        case 0 where !bytes.isEmpty:  // flip a bit
            bytes[Swift.min(position, bytes.count - 1)] ^= 1 << UInt8(rng.below(8))
        case 1 where !bytes.isEmpty:  // replace a byte
            bytes[Swift.min(position, bytes.count - 1)] = UInt8(truncatingIfNeeded: rng.next())
        case 2:  // insert random bytes
            bytes.insert(contentsOf: rng.bytes(rng.int(1...4)), at: position)
        case 3 where !bytes.isEmpty:  // delete a run
            let at = rng.below(bytes.count)
            bytes.removeSubrange(at..<(at + Swift.min(rng.int(1...8), bytes.count - at)))
        case 4 where !bytes.isEmpty:  // duplicate a slice
            let from = rng.below(bytes.count)
            bytes.insert(contentsOf: Array(bytes[from..<Swift.min(bytes.count, from + rng.int(1...32))]), at: position)
        case 5 where !bytes.isEmpty:  // truncate
            bytes.removeSubrange(rng.below(bytes.count)...)
        case 6:  // a special byte: NUL, CR, LF, space, tab, 0x7F, 0x80, 0xFF
            bytes.insert(rng.pick([0, 13, 10, 32, 9, 0x7F, 0x80, 0xFF] as [UInt8]), at: position)
        case 7:  // a multi-byte UTF-8 sequence, incl. combining marks and keycaps
            let samples = ["\u{301}", "é", "日", "🚀", "\u{FE0F}\u{20E3}", "\u{200D}", "\u{FFFD}", "٣", "５", "\u{00A0}"]
            bytes.insert(contentsOf: Array(rng.pick(samples).utf8), at: position)
        default:  // an interesting token of the format
            bytes.insert(contentsOf: rng.pick(interesting), at: position)
        }
    }
    return bytes
}

/// Mutates text as UTF-8 bytes (invalid sequences become U+FFFD, as a server decoding the
/// bytes would see them).
public func mutate(_ text: String, rng: inout some RandomNumberGenerator, rounds: Int, interesting: [[UInt8]] = []) -> String {
    String(decoding: mutate(Array(text.utf8), rng: &rng, rounds: rounds, interesting: interesting), as: UTF8.self)
}

/// Shrinking sequences for generated inputs that have no structure the library knows
/// (a header, a body, a file's text).
public enum FuzzShrink {
    /// `elements` with runs left out, from half of it down to the library's one element at a
    /// time (delta debugging: long inputs lose big runs first, so a 2 KB text shrinks in a
    /// few hundred checks, not millions).
    public static func removals<T: Sendable>(_ elements: [T]) -> some Sequence<[T]> & SendableMetatype {
        var sizes: [Int] = []
        var size = elements.count / 2
        while size >= 2 {
            sizes.append(size)
            size /= 2
        }
        let chunks = sizes.lazy.flatMap { size in
            stride(from: 0, to: elements.count, by: size).lazy.map { start in
                var candidate = elements
                candidate.removeSubrange(start..<Swift.min(elements.count, start + size))
                return candidate
            }
        }
        return chunks.append(Shrink.omitSingleElement(from: elements))
    }

    /// `text` with runs of Unicode scalars left out (scalars, not Characters: a combining mark
    /// can go without its base).
    public static func removals(_ text: String) -> some Sequence<String> & SendableMetatype {
        removals(Array(text.unicodeScalars)).lazy.map { scalars in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars)
            return String(view)
        }
    }
}

/// A string literal that shows control characters and non-ASCII scalars unambiguously.
public func fuzzQuote(_ text: String, limit: Int = 600) -> String {
    var out = "\""
    for scalar in text.unicodeScalars.prefix(limit) {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\r": out += "\\r"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case " "..."~": out.unicodeScalars.append(scalar)
        default: out += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    if text.unicodeScalars.count > limit { out += "…(\(text.unicodeScalars.count) scalars)" }
    return out + "\""
}

public func fuzzQuote(_ bytes: [UInt8], limit: Int = 600) -> String {
    var out = "\""
    for byte in bytes.prefix(limit) {
        switch byte {
        case 0x22: out += "\\\""
        case 0x5C: out += "\\\\"
        case 13: out += "\\r"
        case 10: out += "\\n"
        case 9: out += "\\t"
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(byte))
        default: out += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }
    }
    if bytes.count > limit { out += "…(\(bytes.count) bytes)" }
    return out + "\""
}
