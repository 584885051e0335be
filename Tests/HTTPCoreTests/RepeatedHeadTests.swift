import DepotTestSupport
import NIOHTTP1
import PropertyBased
import Synchronization
import Testing

@testable import HTTPCore

/// `RepeatedHead` against `WireRequestHead.read`, the reading it skips: every head it matches
/// must be one `read` accepts, of the same length, read as the kept head but for the value of
/// the first `Range` field, which must be the value it reports.
@Suite struct RepeatedHeadTests {
    static let inputs = 20_000

    final class Earlier {}

    /// A head `read` accepts, and a next head: the same with its first `Range` value replaced,
    /// that and more bytes (pipelined), a mutation of either, or a part of one.
    static func generate(_ rng: inout some RandomNumberGenerator) -> (kept: [UInt8], next: [UInt8]) {
        var kept = HeadInput.generate(&rng)
        while kept.withUnsafeBytes(WireRequestHead.read) == nil { kept = HeadInput.generate(&rng) }
        let read = kept.withUnsafeBytes(WireRequestHead.read)!
        // The head alone, as `WireFastPath` keeps it.
        kept = Array(kept.prefix(read.length))
        var next = kept
        if let range = read.firstRange, rng.chance(0.8) {
            let value = rng.weighted([
                (6, Array("bytes=\(rng.int(0...1 << 30))-\(rng.int(0...1 << 30))".utf8)), (2, Array(rng.pick(HeadInput.plainValues).utf8)),
                (2, Array(rng.pick(HeadInput.values).utf8)), (1, Array(repeating: UInt8(ascii: "9"), count: rng.int(0...WireRequestHead.maximumLength))),
            ])
            next.replaceSubrange(range, with: value)
        }
        if rng.chance(0.2) { next += Array(HeadInput.generate(&rng).prefix(rng.int(0...40))) }
        if rng.chance(0.2) { next = mutate(next, rng: &rng, rounds: rng.int(1...2), interesting: [Array("\r\n".utf8), [9], [32], [0x80]]) }
        if rng.chance(0.1) { next = Array(next.prefix(rng.int(0...next.count))) }
        return (kept, next)
    }

    @Test func everyMatchIsTheKeptHeadReadAgainButForItsRange() async {
        let input = Generator(run: { Self.generate(&$0) }, shrink: { _ in [] as [([UInt8], [UInt8])] })
        let counts = Mutex((inputs: 0, matched: 0, withRange: 0))
        await propertyCheck(count: Self.inputs, input: input) { kept, next in
            let read = kept.withUnsafeBytes(WireRequestHead.read)!
            let repeated = RepeatedHead(bytes: kept, range: read.firstRange, method: read.method, earlier: Earlier())
            let match = next.withUnsafeBytes(repeated.match)
            counts.withLock { $0 = ($0.inputs + 1, $0.matched + (match == nil ? 0 : 1), $0.withRange + (match?.range == nil ? 0 : 1)) }
            if let failure = Self.disagreement(kept: kept, read, next: next, match: match) {
                Issue.record("\(failure): kept \(fuzzQuote(kept)), next \(fuzzQuote(next))")
            }
        }
        let (inputs, matched, withRange) = counts.withLock { $0 }
        print("repeated heads: \(matched) of \(inputs) matched (\(withRange) with a range), each read as the kept head but for its range")
        #expect(inputs >= Self.inputs && matched >= inputs / 4 && withRange >= inputs / 10 && matched <= inputs * 9 / 10)
    }

    /// What is wrong with `match` for `next`, or nil.
    static func disagreement(kept bytes: [UInt8], _ kept: WireRequestHead, next: [UInt8], match: (length: Int, range: Range<Int>?)?) -> String? {
        // The first range field's value is where `read` says it is.
        let keptRange = kept.fields.first { $0.0.lowercased() == "range" }?.1
        guard keptRange == kept.firstRange.map({ String(decoding: bytes[$0], as: UTF8.self) }) else { return "the first range field is not where read says" }
        guard let match else { return nil }
        guard let again = next.withUnsafeBytes(WireRequestHead.read) else { return "matched a head read does not accept" }
        guard again.length == match.length else { return "matched \(match.length) bytes of a head of \(again.length)" }
        guard again.method == kept.method, again.target == kept.target else { return "another method or target" }
        guard again.fields.count == kept.fields.count else { return "other fields" }
        let value = match.range.map { String(decoding: next[$0], as: UTF8.self) }
        guard (value == nil) == (kept.firstRange == nil) else { return "a range where the kept head has none, or none where it has one" }
        var seenRange = false
        for (field, keptField) in zip(again.fields, kept.fields) {
            guard field.0 == keptField.0 else { return "another field name" }
            if !seenRange, field.0.lowercased() == "range" {
                seenRange = true
                guard field.1 == value else { return "range \(field.1) read, \(value ?? "none") matched" }
            } else if field.1 != keptField.1 {
                return "another value of \(field.0)"
            }
        }
        return nil
    }

    @Test func aStreamsNextRangeMatchesAndAnythingElseDoesNot() {
        let head = "GET /v2/images/abc/file HTTP/1.1\r\nHost: depot\r\nRange: bytes=0-4095\r\nX-Auth-Token: t\r\n\r\n"
        let read = Array(head.utf8).withUnsafeBytes(WireRequestHead.read)!
        let repeated = RepeatedHead(bytes: Array(head.utf8), range: read.firstRange, method: .GET, earlier: Earlier())
        func match(_ text: String) -> String? {
            let bytes = Array(text.utf8)
            return bytes.withUnsafeBytes(repeated.match).map { "\($0.length) " + ($0.range.map { String(decoding: bytes[$0], as: UTF8.self) } ?? "-") }
        }
        let next = "GET /v2/images/abc/file HTTP/1.1\r\nHost: depot\r\nRange: bytes=1048576-1114111\r\nX-Auth-Token: t\r\n\r\n"
        #expect(match(next) == "\(next.utf8.count) bytes=1048576-1114111")
        #expect(match(next + "GET /") == "\(next.utf8.count) bytes=1048576-1114111", "a pipelined head after it")
        #expect(match(head) == "\(head.utf8.count) bytes=0-4095")
        #expect(match(String(next.dropLast())) == nil, "not complete yet")
        for other in [
            next.replacingOccurrences(of: "t\r\n\r\n", with: "u\r\n\r\n"), next.replacingOccurrences(of: "abc", with: "abd"),
            next.replacingOccurrences(of: "GET", with: "HEAD"), next.replacingOccurrences(of: "Range: bytes", with: "Range:  bytes"),
            next.replacingOccurrences(of: "-1114111", with: "-1114111 "), next.replacingOccurrences(of: "-1114111", with: "-1114111\t"),
            next.replacingOccurrences(of: "bytes=", with: "bytes=\u{1}"), next.replacingOccurrences(of: "bytes=", with: "bytes=é"),
            next.replacingOccurrences(of: "Host: depot\r\n", with: ""), next.replacingOccurrences(of: "\r\n\r\n", with: "\r\nConnection: close\r\n\r\n"),
            next.replacingOccurrences(of: "-1114111\r\n", with: "-1114111\n"),
            next.replacingOccurrences(of: "bytes=1048576-1114111", with: String(repeating: "9", count: WireRequestHead.maximumLength)),
        ] {
            #expect(match(other) == nil, "\(fuzzQuote(other))")
        }
        // A head without a range matches itself only.
        let whole = "GET /v2/images/abc/file HTTP/1.1\r\nX-Auth-Token: t\r\n\r\n"
        let wholeRead = Array(whole.utf8).withUnsafeBytes(WireRequestHead.read)!
        #expect(wholeRead.firstRange == nil)
        let again = RepeatedHead(bytes: Array(whole.utf8), range: nil, method: .GET, earlier: Earlier())
        #expect(Array((whole + whole).utf8).withUnsafeBytes(again.match)?.length == whole.utf8.count)
        #expect(Array(whole.replacingOccurrences(of: "t\r", with: "u\r").utf8).withUnsafeBytes(again.match) == nil)
    }
}
