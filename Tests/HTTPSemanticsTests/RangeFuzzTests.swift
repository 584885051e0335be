import DepotTestSupport
import Foundation
import Testing

@testable import HTTPSemantics

/// Property-based fuzzing of `Range`, `If-None-Match` and `If-Range` parsing against
/// independent reference implementations of RFC 9110 section 14 and 13.1. See
/// `Sources/DepotTestSupport/Fuzzing.swift` for DEPOT_FUZZ_INPUTS / DEPOT_FUZZ_SEED.
@Suite struct RangeFuzzTests {
    static let defaultInputs = 50_000

    @Test func rangeHeadersMatchTheReference() async {
        let report = await fuzz(
            "range", defaultInputs: Self.defaultInputs, cpuPerInput: .microseconds(600),
            generate: { rng, counters -> (header: String?, size: UInt64) in
                let size = RangeGenerator.size(&rng)
                var header = RangeGenerator.header(&rng, size: size)
                if rng.chance(0.3) {
                    counters.count("mutated")
                    header = String(decoding: mutate(Array(header.utf8), rng: &rng, rounds: rng.int(1...4), interesting: RangeGenerator.interesting), as: UTF8.self)
                }
                return (rng.chance(0.01) ? nil : header, size)
            },
            check: { input, counters in RangeCheck.failure(input.header, size: input.size, counters: counters) },
            explain: { input in
                guard let header = input.header else { return "header nil, size \(input.size)" }
                let minimal = shrink(header) { RangeCheck.failure($0, size: input.size, counters: nil) != nil }
                return "size \(input.size), header \(fuzzQuote(header)), minimal \(fuzzQuote(minimal))"
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    @Test func coalescingMatchesTheReferenceUnion() async {
        let report = await fuzz(
            "range-coalesce", defaultInputs: Self.defaultInputs / 4, cpuPerInput: .microseconds(600),
            generate: { rng, _ -> [ClosedRange<UInt64>] in
                let ceiling: UInt64 = rng.pick([8, 64, 1 << 20, UInt64.max - 1])
                return (0..<rng.int(0...12)).map { _ in
                    let a = UInt64.random(in: 0...ceiling, using: &rng)
                    let b = rng.chance(0.5) ? min(ceiling, a &+ UInt64(rng.below(4))) : UInt64.random(in: a...ceiling, using: &rng)
                    return a...b
                }
            },
            check: { ranges, _ in
                let actual = RangeRequest.coalesce(ranges)
                let expected = RangeReference.union(ranges)
                return actual == expected ? nil : "coalesce(\(ranges)) = \(actual), the union is \(expected)"
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    @Test func conditionalHeadersMatchTheReference() async {
        let report = await fuzz(
            "conditional", defaultInputs: Self.defaultInputs, cpuPerInput: .microseconds(600),
            generate: { rng, counters -> (etag: String, header: String) in
                let etag = "\"" + ConditionalGenerator.hex(&rng, count: 64) + "\""
                var header = ConditionalGenerator.header(&rng, etag: etag)
                if rng.chance(0.25) {
                    counters.count("mutated")
                    let interesting = [Array(etag.utf8), [34], [44], Array("W/".utf8)]
                    header = String(decoding: mutate(Array(header.utf8), rng: &rng, rounds: rng.int(1...3), interesting: interesting), as: UTF8.self)
                }
                return (etag, header)
            },
            check: { input, counters in ConditionalCheck.failure(input.header, etag: input.etag, counters: counters) })
        print(report)
        #expect(report.passed, "\(report.failureText)")
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
    }
}

// MARK: Generators

enum RangeGenerator {
    static let interesting: [[UInt8]] = ["bytes=", "-", ",", ", ", "0", "9999999999999999999", "18446744073709551616", " ", "\t", "=", "\u{301}"].map { Array($0.utf8) }

    static func size(_ rng: inout FuzzRNG) -> UInt64 {
        rng.weighted([
            (2, 0), (2, 1), (10, UInt64(rng.int(2...100))), (6, UInt64(rng.int(101...100_000))), (3, rng.next() >> UInt64(rng.int(1...63))),
            (2, UInt64.max), (1, UInt64.max - 1), (1, 1 << 63), (1, 9_999_999_999_999_999_999), (1, 10_000_000_000_000_000_000),
        ])
    }

    static func number(_ rng: inout FuzzRNG, size: UInt64) -> String {
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

    static func spec(_ rng: inout FuzzRNG, size: UInt64) -> String {
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

    static func header(_ rng: inout FuzzRNG, size: UInt64) -> String {
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
    static func hex(_ rng: inout FuzzRNG, count: Int) -> String {
        let digits = Array("0123456789abcdef")
        return String((0..<count).map { _ in digits[rng.below(16)] })
    }

    static func element(_ rng: inout FuzzRNG, etag: String) -> String {
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

    static func header(_ rng: inout FuzzRNG, etag: String) -> String {
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

// MARK: The properties

enum ConditionalCheck {
    static func failure(_ header: String, etag: String, counters: FuzzCounters?) -> String? {
        let noneMatch = ConditionalRequest.noneMatchMatches(header, etag: etag)
        switch ConditionalReference.noneMatch(header, etag: etag) {
        case let .valid(expected):
            counters?.count(expected ? "inm_match" : "inm_no_match")
            if noneMatch != expected {
                return "If-None-Match \(fuzzQuote(header)) against \(etag): got \(noneMatch), RFC 9110 13.1.2 says \(expected)"
            }
        case .invalid:
            counters?.count("inm_invalid")
            // An invalid field may be ignored; but a match must come from the tag or "*".
            if noneMatch && !header.contains(etag) && !header.contains("*") {
                return "If-None-Match \(fuzzQuote(header)) matched \(etag) without containing it"
            }
        }
        let ifRange = ConditionalRequest.ifRangeAllowsRange(header, etag: etag)
        let expectedIfRange = ConditionalReference.ifRangeAllows(header, etag: etag)
        if ifRange != expectedIfRange {
            return "If-Range \(fuzzQuote(header)) against \(etag): got \(ifRange), strong comparison says \(expectedIfRange)"
        }
        if ifRange { counters?.count("if_range_match") }
        // No validator at all (a miss): If-Range never allows the range.
        if ConditionalRequest.ifRangeAllowsRange(header, etag: nil) { return "If-Range \(fuzzQuote(header)) allowed a range without an entity tag" }
        return nil
    }
}

enum RangeCheck {
    /// nil when `RangeRequest.parse` agrees with the reference and keeps its promises.
    static func failure(_ header: String?, size: UInt64, counters: FuzzCounters?) -> String? {
        let actual = RangeRequest.parse(header, size: size)
        let (expected, note) = RangeReference.evaluate(header, size: size)
        if let note { counters?.count(note) }
        switch expected {
        case .whole: counters?.count("whole")
        case .unsatisfiable: counters?.count("416")
        case let .ranges(list): counters?.count(list.count == 1 ? "one_range" : "multi_range")
        }
        if actual != expected { return "parse gave \(actual), the reference (RFC 9110 14 + Depot's policies) gives \(expected)" }
        if case let .ranges(list) = actual {
            // The promises, checked on their own: in bounds, sorted, disjoint and not touching.
            if list.isEmpty { return "an empty list of ranges" }
            if list.count > RangeRequest.maximumParts { return "\(list.count) ranges, more than the maximum" }
            var total: UInt64 = 0
            for (index, range) in list.enumerated() {
                if range.upperBound >= size { return "range \(range) is not within 0..<\(size)" }
                if index > 0 && range.lowerBound <= list[index - 1].upperBound + 1 {
                    return "ranges \(list[index - 1]) and \(range) overlap, touch or are out of order"
                }
                total += range.upperBound - range.lowerBound + 1
            }
            if total > size { return "the ranges cover \(total) bytes of \(size)" }
        }
        return nil
    }
}

// MARK: References

/// RFC 9110 section 14.1 evaluated over Unicode scalars (the bytes of the field, not
/// Swift's grapheme clusters), with Depot's documented policies where the RFC leaves a choice
/// ("a server MAY ignore the Range header field", 14.2):
///   P1 more than `RangeRequest.maximumParts` list elements: ignored (200);
///   P2 a number of more than 19 digits: ignored, like any unparseable header (200);
///   P3 an inverted int-range (last < first) makes the ranges-specifier invalid: rejected (416);
///   P4 an empty list element: ignored (200), although section 5.6.1.2 asks recipients to skip them;
///   P5 a satisfiable set on a zero-length body (only a suffix can be): 200 with the empty body,
///      as no Content-Range can describe zero bytes.
enum RangeReference {
    static func evaluate(_ header: String?, size: UInt64) -> (RangeRequest, note: String?) {
        guard let header else { return (.whole, nil) }
        var scalars = Array(header.unicodeScalars)
        trimOWS(&scalars)
        guard let equals = scalars.firstIndex(of: "=") else { return (.whole, "no_equals") }
        var unit = Array(scalars[..<equals])
        trimOWS(&unit)
        guard unit.count == 5, zip(unit, "bytes".unicodeScalars).allSatisfy({ asciiLower($0) == $1 }) else { return (.whole, "other_unit") }
        let elements = splitOnComma(Array(scalars[(equals + 1)...]))
        if elements.count > RangeRequest.maximumParts { return (.whole, "P1_many_parts") }
        enum Spec { case int(UInt64, UInt64?), suffix(UInt64), inverted }
        var specs: [Spec] = []
        for var element in elements {
            trimOWS(&element)
            if element.isEmpty { return (.whole, "P4_empty_element") }
            guard let dash = element.firstIndex(of: "-") else { return (.whole, "syntax") }
            let first = Array(element[..<dash]), last = Array(element[(dash + 1)...])
            guard first.allSatisfy(isDigit), last.allSatisfy(isDigit), !(first.isEmpty && last.isEmpty) else { return (.whole, "syntax") }
            if first.count > 19 || last.count > 19 { return (.whole, "P2_huge_number") }
            if first.isEmpty {
                specs.append(.suffix(value(last)))
            } else if last.isEmpty {
                specs.append(.int(value(first), nil))
            } else if value(last) < value(first) {
                specs.append(.inverted)
            } else {
                specs.append(.int(value(first), value(last)))
            }
        }
        if specs.contains(where: { if case .inverted = $0 { true } else { false } }) { return (.unsatisfiable, "P3_inverted") }
        // 14.1.1: satisfiable if an int-range starts before the end, or a suffix is non-zero.
        var satisfiable: [ClosedRange<UInt64>] = []
        var anySatisfiable = false
        for spec in specs {
            switch spec {
            case let .int(first, last) where first < size:
                anySatisfiable = true
                satisfiable.append(first...min(last ?? (size - 1), size - 1))
            case let .suffix(length) where length > 0:
                anySatisfiable = true
                if size > 0 { satisfiable.append((length >= size ? 0 : size - length)...(size - 1)) }
            default: break
            }
        }
        guard anySatisfiable else { return (.unsatisfiable, nil) }
        if size == 0 { return (.whole, "P5_empty_body") }
        return (.ranges(union(satisfiable)), nil)
    }

    /// The union of closed ranges as maximal disjoint, non-adjacent ranges, ascending: merged
    /// pairwise until nothing merges (quadratic and obviously right, unlike a sweep).
    static func union(_ ranges: [ClosedRange<UInt64>]) -> [ClosedRange<UInt64>] {
        var pieces = ranges
        var merged = true
        while merged {
            merged = false
            search: for i in pieces.indices {
                for j in pieces.indices where j != i {
                    let a = pieces[i], b = pieces[j]
                    // Overlapping or adjacent, without overflowing at UInt64.max.
                    let joins = (a.upperBound == .max || b.lowerBound <= a.upperBound + 1) && (b.upperBound == .max || a.lowerBound <= b.upperBound + 1)
                    if joins {
                        pieces[i] = min(a.lowerBound, b.lowerBound)...max(a.upperBound, b.upperBound)
                        pieces.remove(at: j)
                        merged = true
                        break search
                    }
                }
            }
        }
        return pieces.sorted { $0.lowerBound < $1.lowerBound }
    }

    static func isDigit(_ s: Unicode.Scalar) -> Bool { s.value >= 0x30 && s.value <= 0x39 }
    static func asciiLower(_ s: Unicode.Scalar) -> Unicode.Scalar { s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 32)! : s }
    static func value(_ digits: [Unicode.Scalar]) -> UInt64 { digits.reduce(0) { $0 * 10 + UInt64($1.value - 0x30) } }

    static func trimOWS(_ scalars: inout [Unicode.Scalar]) {
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
    }

    static func splitOnComma(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var parts: [[Unicode.Scalar]] = [[]]
        for scalar in scalars {
            if scalar == "," { parts.append([]) } else { parts[parts.count - 1].append(scalar) }
        }
        return parts
    }
}

/// RFC 9110 13.1.2 (If-None-Match, weak comparison) and 13.1.5 (If-Range, strong comparison).
enum ConditionalReference {
    enum Parsed { case valid(Bool), invalid }

    /// entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text.
    static func isEtagc(_ s: Unicode.Scalar) -> Bool { s.value == 0x21 || (0x23...0x7E).contains(s.value) || s.value >= 0x80 }

    /// If-None-Match = "*" / #entity-tag; matches when any tag's opaque-tag equals ours.
    static func noneMatch(_ header: String, etag: String) -> Parsed {
        var scalars = Array(header.unicodeScalars)
        RangeReference.trimOWS(&scalars)
        if scalars == ["*"] { return .valid(true) }
        let opaque = Array(etag.unicodeScalars)
        var index = 0
        var matched = false
        var sawTag = false
        func skipOWS() { while index < scalars.count, scalars[index] == " " || scalars[index] == "\t" { index += 1 } }
        while true {
            // Empty list elements are allowed (5.6.1.2).
            skipOWS()
            while index < scalars.count, scalars[index] == "," {
                index += 1
                skipOWS()
            }
            if index == scalars.count { break }
            if scalars[index] == "W", index + 1 < scalars.count, scalars[index + 1] == "/" { index += 2 }
            guard index < scalars.count, scalars[index] == "\"" else { return .invalid }
            let start = index
            index += 1
            while index < scalars.count, isEtagc(scalars[index]) { index += 1 }
            guard index < scalars.count, scalars[index] == "\"" else { return .invalid }
            index += 1
            sawTag = true
            if Array(scalars[start..<index]) == opaque { matched = true }
            skipOWS()
            guard index == scalars.count || scalars[index] == "," else { return .invalid }
        }
        return sawTag ? .valid(matched) : .invalid
    }

    /// If-Range = entity-tag / HTTP-date; only a strong tag equal to ours allows the range.
    static func ifRangeAllows(_ header: String, etag: String) -> Bool {
        var scalars = Array(header.unicodeScalars)
        RangeReference.trimOWS(&scalars)
        return scalars == Array(etag.unicodeScalars)
    }
}
