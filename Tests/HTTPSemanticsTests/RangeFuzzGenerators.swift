import DepotTestSupport
import Foundation
import PropertyBased

@testable import HTTPSemantics

// MARK: Generators

enum RangeGenerator {
    static let interesting: [[UInt8]] = ["bytes=", "-", ",", ", ", "0", "9999999999999999999", "18446744073709551616", " ", "\t", "=", "\u{301}"].map { Array($0.utf8) }

    static func size(_ rng: inout some RandomNumberGenerator) -> UInt64 {
        rng.weighted([
            (2, 0), (2, 1), (10, UInt64(rng.int(2...100))), (6, UInt64(rng.int(101...100_000))), (3, rng.next() >> UInt64(rng.int(1...63))),
            (2, UInt64.max), (1, UInt64.max - 1), (1, 1 << 63), (1, 9_999_999_999_999_999_999), (1, 10_000_000_000_000_000_000),
        ])
    }

    static func number(_ rng: inout some RandomNumberGenerator, size: UInt64) -> String {
        switch rng.below(40) {
        case 0..<10: return String(rng.below(21))
        case 10..<17:  // around the size
            let offset = rng.int(-2...2)
            return String(offset < 0 ? size &- UInt64(-offset) : size &+ UInt64(offset))
        case 17..<22: return String(size == 0 ? 0 : UInt64.random(in: 0..<size, using: &rng))
        case 22..<25: return String(rng.next())
        case 25: return "9999999999999999999"  // 19 digits, the most the parser takes
        case 26: return String(UInt64.random(in: 1_000_000_000_000_000_000...9_999_999_999_999_999_999, using: &rng))
        case 27: return String(UInt64.max)
        case 28: return "18446744073709551616"  // UInt64.max + 1
        case 29: return String((0..<rng.int(20...40)).map { _ in Character(String(rng.below(10))) })
        case 30: return String(repeating: "0", count: rng.int(1...25)) + String(rng.below(1000))
        case 31: return rng.pick(["-5", "+5", "1.5", "0x10", "1e3", "5 ", " 5", "", "٣", "５", "¹"])
        case 32: return String(rng.below(9)) + rng.pick(["\u{301}", "\u{FE0F}\u{20E3}", "\u{308}", "\u{200D}", "\u{FE0F}"])
        default: return String(rng.below(Int(min(size, 1 << 40)) + 1))
        }
    }

    static func spec(_ rng: inout some RandomNumberGenerator, size: UInt64) -> String {
        let spec: String
        switch rng.below(20) {
        case 0..<8: spec = number(&rng, size: size) + "-" + number(&rng, size: size)
        case 8..<11: spec = number(&rng, size: size) + "-"
        case 11..<15: spec = "-" + number(&rng, size: size)
        case 15: spec = ""
        case 16: spec = rng.pick(["-", "a-b", "1-2-3", "5", "--5", "bytes=1-2", "1--2", "0-0", "*"])
        case 17:  // an inverted range
            let a = rng.int(1...1000)
            spec = "\(a)-\(rng.below(a))"
        case 18: spec = number(&rng, size: size) + rng.pick([" - ", "- ", " -", "\t-"]) + number(&rng, size: size)
        default: spec = "0-" + number(&rng, size: size)
        }
        return rng.chance(0.1) ? rng.pick([" ", "\t", "  "]) + spec + rng.pick(["", " ", "\t"]) : spec
    }

    static func header(_ rng: inout some RandomNumberGenerator, size: UInt64) -> String {
        let unit: String = rng.weighted([
            (20, "bytes"), (4, "BYTES"), (3, "Bytes"), (1, "bYtEs"), (1, "items"), (1, "byte"), (1, ""), (1, "bytesx"), (1, "none"), (1, " bytes "),
        ])
        let equals: String = rng.weighted([(20, "="), (1, " = "), (1, "=="), (1, ""), (1, "=\t"), (1, ":")])
        let count: Int = rng.weighted([(10, 1), (6, 2), (4, rng.int(3...8)), (2, rng.int(9...33)), (1, rng.int(34...40))])
        var text = unit + equals
        for index in 0..<count {
            if index > 0 { text += rng.weighted([(10, ","), (6, ", "), (2, " ,"), (1, ",\t"), (1, ",,"), (1, " , ")]) }
            text += spec(&rng, size: size)
        }
        if rng.chance(0.03) { text += "," }
        if rng.chance(0.03) { text = text.replacingOccurrences(of: "=", with: "=,") }
        if rng.chance(0.05) { text = rng.pick([" ", "\t"]) + text + rng.pick([" ", "\t", ""]) }
        return text
    }
}

enum ConditionalGenerator {
    static func hex(_ rng: inout some RandomNumberGenerator, count: Int) -> String {
        let digits = Array("0123456789abcdef")
        return String((0..<count).map { _ in digits[rng.below(16)] })
    }

    static func element(_ rng: inout some RandomNumberGenerator, etag: String) -> String {
        switch rng.below(22) {
        case 0..<5: return etag
        case 5..<8: return "W/" + etag
        case 8..<12: return "\"" + hex(&rng, count: 64) + "\""
        case 12:  // one hex digit changed
            var chars = Array(etag)
            let at = rng.int(1...64)
            chars[at] = chars[at] == "0" ? "1" : "0"
            return String(chars)
        case 13: return etag.uppercased()
        case 14: return String(etag.dropFirst().dropLast())  // unquoted
        case 15: return "w/" + etag
        case 16: return "*"
        case 17: return "\"a,b\""  // a comma inside a valid opaque-tag
        case 18: return "\"" + hex(&rng, count: rng.int(0...10)) + "\""
        case 19: return "W/ " + etag
        case 20: return "Wed, 21 Oct 2015 07:28:00 GMT"
        default: return rng.pick(["", "garbage", "\"unterminated", "W/", "\"\"", "\"é\"", etag + etag])
        }
    }

    static func header(_ rng: inout some RandomNumberGenerator, etag: String) -> String {
        if rng.chance(0.05) { return rng.pick(["*", " * ", "", "Wed, 21 Oct 2015 07:28:00 GMT"]) }
        var text = ""
        for index in 0..<rng.weighted([(10, 1), (5, 2), (3, rng.int(3...6)), (1, rng.int(7...40))]) {
            if index > 0 { text += rng.weighted([(10, ", "), (5, ","), (1, " ,"), (1, ",\t"), (1, ", ,"), (1, ",,")]) }
            text += element(&rng, etag: etag)
        }
        if rng.chance(0.05) { text = rng.pick([" ", "\t", ", "]) + text + rng.pick([" ", "\t", ","]) }
        return text
    }
}

/// One input of the Range property: a header (nil: no header) and the representation's size.
struct RangeInput: Sendable, CustomStringConvertible {
    var header: String?
    var size: UInt64

    static func generate(_ rng: inout some RandomNumberGenerator) -> RangeInput {
        let size = RangeGenerator.size(&rng)
        var header = RangeGenerator.header(&rng, size: size)
        if rng.chance(0.3) { header = mutate(header, rng: &rng, rounds: rng.int(1...4), interesting: RangeGenerator.interesting) }
        return RangeInput(header: rng.chance(0.01) ? nil : header, size: size)
    }

    /// Shrinks the header, keeping the size (the numbers in it are relative to the size).
    static func shrink(_ input: RangeInput) -> some Sequence<RangeInput> & SendableMetatype {
        FuzzShrink.removals(input.header ?? "").lazy.map { RangeInput(header: $0, size: input.size) }
    }

    var description: String { "size \(size), header \(header.map { fuzzQuote($0) } ?? "nil")" }
}

/// One input of the conditional-request property: the representation's strong entity tag and
/// an If-None-Match / If-Range field value.
struct ConditionalInput: Sendable, CustomStringConvertible {
    var etag: String
    var header: String

    static func generate(_ rng: inout some RandomNumberGenerator) -> ConditionalInput {
        let etag = "\"" + ConditionalGenerator.hex(&rng, count: 64) + "\""
        var header = ConditionalGenerator.header(&rng, etag: etag)
        if rng.chance(0.25) {
            header = mutate(header, rng: &rng, rounds: rng.int(1...3), interesting: [Array(etag.utf8), [34], [44], Array("W/".utf8)])
        }
        return ConditionalInput(etag: etag, header: header)
    }

    static func shrink(_ input: ConditionalInput) -> some Sequence<ConditionalInput> & SendableMetatype {
        FuzzShrink.removals(input.header).lazy.map { ConditionalInput(etag: input.etag, header: $0) }
    }

    var description: String { "etag \(etag), header \(fuzzQuote(header))" }
}

/// Closed ranges for the coalescing property, each bounded by one ceiling.
enum CoalesceGenerator {
    static func ranges(_ rng: inout some RandomNumberGenerator) -> [ClosedRange<UInt64>] {
        let ceiling: UInt64 = rng.pick([8, 64, 1 << 20, UInt64.max - 1])
        return (0..<rng.int(0...12)).map { _ in
            let a = UInt64.random(in: 0...ceiling, using: &rng)
            let b = rng.chance(0.5) ? min(ceiling, a &+ UInt64(rng.below(4))) : UInt64.random(in: a...ceiling, using: &rng)
            return a...b
        }
    }
}
