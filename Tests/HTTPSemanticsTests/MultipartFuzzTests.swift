import DepotTestSupport
import Foundation
import Testing

@testable import HTTPSemantics

/// Property-based fuzzing of the streaming `multipart/form-data` parser: the same body fed in
/// any split gives the same parts; a body built from known parts gives exactly those parts;
/// and every body (valid, near-miss or mutated) parses like a simple whole-buffer reference.
@Suite struct MultipartFuzzTests {
    static let defaultInputs = 15_000

    @Test func splitsAndRoundTrips() async {
        let report = await fuzz(
            "multipart", defaultInputs: Self.defaultInputs, cpuPerInput: .milliseconds(4),
            generate: { rng, counters -> (body: GeneratedBody, cuts: [[Int]]) in
                var body = MultipartGenerator.body(&rng)
                if rng.chance(0.3) {
                    counters.count("mutated")
                    body.bytes = MultipartGenerator.mutateBody(body.bytes, boundary: body.boundary, rng: &rng)
                    body.expected = nil
                }
                return (body, MultipartGenerator.cutSets(for: body.bytes, boundary: body.boundary, rng: &rng))
            },
            check: { input, counters in MultipartCheck.failure(input.body, cutSets: input.cuts, counters: counters) },
            explain: { input in
                // Shrink the body (keeping the boundary) under fixed splits, when the failure
                // does not depend on the known parts.
                let body = input.body
                let fixedCuts = MultipartGenerator.fixedCutSets(boundary: body.boundary)
                var minimal = body
                minimal.expected = nil
                if MultipartCheck.failure(minimal, cutSets: input.cuts + fixedCuts(body.bytes.count), counters: nil) != nil {
                    minimal.bytes = shrink(body.bytes, maxChecks: 1500) { candidate in
                        var trial = minimal
                        trial.bytes = candidate
                        return MultipartCheck.failure(trial, cutSets: fixedCuts(candidate.count), counters: nil) != nil
                    }
                }
                return "boundary \(fuzzQuote(body.boundary)), body \(fuzzQuote(body.bytes, limit: 300)), minimal \(fuzzQuote(minimal.bytes))"
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    @Test func boundaryAndDispositionParameters() async {
        let report = await fuzz(
            "multipart-params", defaultInputs: Self.defaultInputs, cpuPerInput: .microseconds(500),
            generate: { rng, _ -> (contentType: String, boundary: String, disposition: String, name: String, filename: String?) in
                let boundary = MultipartGenerator.rfcBoundary(&rng)
                // RFC 2046 5.1.1: a boundary with characters outside token needs quotes.
                let tspecials = Set("()<>@,;:\\\"/[]?= ")
                let quoted = boundary.contains(where: { tspecials.contains($0) }) || rng.chance(0.3)
                var parameters = [(rng.pick(["boundary", "Boundary", "BOUNDARY"])) + "=" + (quoted ? "\"\(boundary)\"" : boundary)]
                if rng.chance(0.3) { parameters.insert("charset=utf-8", at: rng.below(parameters.count + 1)) }
                let contentType = rng.pick(["multipart/form-data", "Multipart/Form-Data", "MULTIPART/FORM-DATA"])
                    + parameters.map { rng.pick([";", "; ", " ; "]) + $0 }.joined()
                // Content-Disposition: name and filename with the characters forms use.
                let name = MultipartGenerator.fieldName(&rng), filename = rng.chance(0.5) ? MultipartGenerator.fieldName(&rng) + ".img" : nil
                var disposition = "form-data" + rng.pick([";", "; "]) + "name=\"\(name)\""
                if let filename { disposition += rng.pick([";", "; ", " ; "]) + "filename=\"\(filename)\"" }
                return (contentType, boundary, disposition, name, filename)
            },
            check: { input, _ in
                // ";" is a bchar in no boundary; the parameter list cannot carry it.
                if !input.boundary.contains(";") {
                    let parsed = MultipartParser.boundary(contentType: input.contentType)
                    if parsed != input.boundary {
                        return "boundary(contentType: \(fuzzQuote(input.contentType))) = \(parsed.map { fuzzQuote($0) } ?? "nil"), expected \(fuzzQuote(input.boundary))"
                    }
                }
                let (name, filename) = MultipartParser.Event.disposition(["content-disposition": input.disposition])
                if name != input.name || filename != input.filename {
                    return "disposition(\(fuzzQuote(input.disposition))) = (\(name ?? "nil"), \(filename ?? "nil"))"
                }
                return nil
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    /// Seeds found by fuzzing, kept as plain regression cases.
    @Test func regressions() throws {
        // A part without headers (RFC 2046: the header block may be empty) keeps its content;
        // it was read as headers up to the next blank line.
        let headerless = Array("--b\r\n\r\nX: y\r\n\r\nDATA\r\n--b--".utf8)
        #expect(MultipartCheck.parse(boundary: "b", headerless, cuts: []).0 == MultipartOutcome(
            parts: [.init(headers: [:], data: Array("X: y\r\n\r\nDATA".utf8), complete: true)], ended: true, finished: true))
        // The header limit holds however the bytes arrive (it held only for small pieces).
        let big = Array(("--b\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\ndata\r\n--b--").utf8)
        let whole = MultipartCheck.parse(boundary: "b", big, cuts: []).0
        let pieces = MultipartCheck.parse(boundary: "b", big, cuts: Array(stride(from: 100, to: big.count, by: 100))).0
        #expect(whole == pieces)
        #expect(whole.error?.contains("bytes of headers") == true)
    }
}

// MARK: Outcomes

/// What the parser made of a whole body: parts with their headers and bytes, whether the
/// closing delimiter came, the error if one was thrown (then nothing else: the parts that
/// came out before it depend on the split), and whether `finish()` accepted it.
struct MultipartOutcome: Equatable, CustomStringConvertible {
    struct Part: Equatable {
        var headers: [String: String]
        var data: [UInt8]
        var complete: Bool
    }

    var parts: [Part] = []
    var ended = false
    var error: String?
    var finished = false

    var description: String {
        let partText = parts.map { "{headers \($0.headers), \($0.data.count) bytes \(fuzzQuote($0.data, limit: 80))\($0.complete ? "" : ", incomplete")}" }
        return "parts [\(partText.joined(separator: ", "))], ended \(ended), finished \(finished), error \(error ?? "none")"
    }
}

struct GeneratedBody {
    var boundary: String
    var bytes: [UInt8]
    /// The outcome the parts it was built from imply; nil once mutated.
    var expected: MultipartOutcome?
}

enum MultipartCheck {
    /// Feeds `bytes` cut at `cuts` and records the outcome, or a broken event-stream promise.
    static func parse(boundary: String, _ bytes: [UInt8], cuts: [Int]) -> (MultipartOutcome, violation: String?) {
        var outcome = MultipartOutcome()
        guard var parser = try? MultipartParser(boundary: boundary) else { return (outcome, "init failed") }
        var open = false
        var previous = 0
        for end in cuts + [bytes.count] where end >= previous {
            let events: [MultipartParser.Event]
            do {
                events = try parser.feed(bytes[previous..<end])
            } catch {
                // A feed that throws drops the events it had made: which parts came out
                // before the error depends on the split, the error itself must not.
                return (MultipartOutcome(error: error.message), nil)
            }
            previous = end
            for event in events {
                if outcome.ended { return (outcome, "event \(event) after the closing delimiter") }
                switch event {
                case let .partStart(headers):
                    if open { return (outcome, "a part started inside a part") }
                    outcome.parts.append(.init(headers: headers, data: [], complete: false))
                    open = true
                case let .partData(data):
                    if !open { return (outcome, "data outside a part") }
                    if data.isEmpty { return (outcome, "an empty data event") }
                    outcome.parts[outcome.parts.count - 1].data += data
                case .partEnd:
                    if !open { return (outcome, "a part ended that had not started") }
                    outcome.parts[outcome.parts.count - 1].complete = true
                    open = false
                case .end:
                    if open { return (outcome, "the body ended inside a part") }
                    outcome.ended = true
                }
            }
        }
        outcome.finished = (try? parser.finish()) != nil
        if outcome.finished != outcome.ended { return (outcome, "finish() \(outcome.finished ? "accepted" : "refused") a body that \(outcome.ended ? "ended" : "did not end")") }
        return (outcome, nil)
    }

    static func failure(_ body: GeneratedBody, cutSets: [[Int]], counters: FuzzCounters?) -> String? {
        let boundary = body.boundary
        let acceptable = !boundary.isEmpty && boundary.utf8.count <= 70
        if (try? MultipartParser(boundary: boundary)) == nil {
            return acceptable ? "init refused the boundary" : nil
        }
        if !acceptable { return "init took a boundary of \(boundary.utf8.count) bytes" }
        let (first, violation) = parse(boundary: boundary, body.bytes, cuts: [])
        if let violation { return "one-shot feed: \(violation)" }
        for cuts in cutSets {
            let (outcome, violation) = parse(boundary: boundary, body.bytes, cuts: cuts)
            if let violation { return "feed cut at \(cuts.prefix(40)): \(violation)" }
            if outcome != first { return "cut at \(cuts.prefix(40)) gave \(outcome); in one piece \(first)" }
        }
        let reference = MultipartReference.parse(boundary: boundary, body.bytes)
        if first != reference { return "the parser gave \(first); the reference gives \(reference)" }
        if let expected = body.expected, first != expected { return "built from \(expected), parsed as \(first)" }
        if let counters {
            counters.count(first.error != nil ? "error" : first.ended ? "ended" : "unfinished")
            if body.expected != nil { counters.count("round_trip") }
            if first.parts.contains(where: { $0.headers.isEmpty }) { counters.count("headerless_part") }
        }
        return nil
    }
}

// MARK: Reference

/// RFC 2046 5.1.1 on a whole buffer: find every delimiter (CRLF "--" boundary) from the
/// start, read the padding and CRLF or "--" after it, the header block up to the blank line
/// (empty when the block starts with CRLF), and the content up to the next delimiter. For an
/// unfinished body it holds back what could still be a delimiter's start, as a streaming
/// parser must. Header lines are read as Depot reads them (the grapheme-level details of
/// `String` are not what is being tested here).
enum MultipartReference {
    static func parse(boundary: String, _ body: [UInt8]) -> MultipartOutcome {
        let delimiter = Array("\r\n--\(boundary)".utf8)
        let data: [UInt8] = [13, 10] + body
        var outcome = MultipartOutcome()
        guard var position = find(delimiter, in: data, from: 0) else { return outcome }
        while true {
            var index = position + delimiter.count
            while index < data.count, data[index] == 32 || data[index] == 9 { index += 1 }
            guard index + 2 <= data.count else { return outcome }
            if data[index] == 45 && data[index + 1] == 45 {
                outcome.ended = true
                outcome.finished = true
                return outcome
            }
            guard data[index] == 13 && data[index + 1] == 10 else {
                return MultipartOutcome(error: "a multipart boundary is followed by something other than a line break or --")
            }
            let headerStart = index + 2
            var headers: [String: String] = [:]
            let contentStart: Int
            if data.count - headerStart >= 2 && data[headerStart] == 13 && data[headerStart + 1] == 10 {
                contentStart = headerStart + 2
            } else if let blank = find([13, 10, 13, 10], in: data, from: headerStart) {
                if blank - headerStart > MultipartParser.maximumHeaderBytes {
                    return MultipartOutcome(error: "a multipart part has more than \(MultipartParser.maximumHeaderBytes) bytes of headers")
                }
                let text = String(decoding: data[headerStart..<blank], as: UTF8.self)
                for line in text.split(separator: "\r\n") where !line.isEmpty {
                    guard let colon = line.firstIndex(of: ":") else {
                        return MultipartOutcome(error: "a multipart part header has no colon: \(line.prefix(80))")
                    }
                    headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                contentStart = blank + 4
            } else {
                // The blank line may still come: only a block already too long is an error.
                if data.count - headerStart - 3 > MultipartParser.maximumHeaderBytes {
                    return MultipartOutcome(error: "a multipart part has more than \(MultipartParser.maximumHeaderBytes) bytes of headers")
                }
                return outcome
            }
            if let next = find(delimiter, in: data, from: contentStart) {
                outcome.parts.append(.init(headers: headers, data: Array(data[contentStart..<next]), complete: true))
                position = next
            } else {
                let safe = max(contentStart, data.count - (delimiter.count - 1))
                outcome.parts.append(.init(headers: headers, data: Array(data[contentStart..<safe]), complete: false))
                return outcome
            }
        }
    }

    /// Naive search: the reference must not share the parser's memchr/memcmp search.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, haystack.count - from >= needle.count else { return nil }
        let first = needle[0]
        var offset = from
        outer: while offset <= haystack.count - needle.count {
            if haystack[offset] != first {
                offset += 1
                continue
            }
            for k in 1..<needle.count where haystack[offset + k] != needle[k] {
                offset += 1
                continue outer
            }
            return offset
        }
        return nil
    }
}

// MARK: Generators

enum MultipartGenerator {
    static let bchars = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?")

    /// A boundary as RFC 2046 allows: 1 to 70 bchars, spaces inside but not last.
    static func rfcBoundary(_ rng: inout FuzzRNG) -> String {
        switch rng.below(10) {
        case 0..<3: return "----WebKitFormBoundary" + String((0..<16).map { _ in rng.pick(bchars.prefix(62)) })
        case 3..<5: return String(repeating: "-", count: 24) + String((0..<16).map { _ in rng.pick(Array("0123456789abcdef")) })
        case 5: return rng.pick(["a", "-", "--", "b", "x-x", "aaaa", "=_=", "a a"])
        case 6: return String(repeating: rng.pick(["a", "-", "ab"]), count: rng.int(1...30))
        default:
            var text = String((0..<rng.int(1...70)).map { _ in rng.chance(0.05) ? " " : rng.pick(bchars) })
            while text.hasSuffix(" ") { text.removeLast() }
            return text.isEmpty ? "z" : text
        }
    }

    static func boundary(_ rng: inout FuzzRNG) -> String {
        switch rng.below(100) {
        case 0: return ""
        case 1: return String(repeating: "b", count: rng.int(71...90))  // refused by init
        case 2: return String((0..<rng.int(1...20)).map { _ in Character(Unicode.Scalar(UInt8(rng.int(33...126)))) })
        default: return rfcBoundary(&rng)
        }
    }

    static func fieldName(_ rng: inout FuzzRNG) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
        return rng.chance(0.5) ? rng.pick(["file", "name", "properties", "disk_format", "container_format", "visibility"])
            : String((0..<rng.int(1...20)).map { _ in rng.pick(alphabet) })
    }

    static func headerValue(_ rng: inout FuzzRNG) -> String {
        let pieces = ["a", "b", "Z", "0", "9", " ", ":", ";", "=", "\"", "/", "é", "日本", "🚀", "-", "_", ".", ",", "x y", "\t"]
        var text = (0..<rng.int(0...24)).map { _ in rng.pick(pieces) }.joined()
        // Values are read trimmed: generate them that way so the expectation is exact.
        text = text.trimmingCharacters(in: .whitespaces)
        return text
    }

    /// A part's header lines (name, value, and the spacing around the colon).
    static func headers(_ rng: inout FuzzRNG, boundary: String) -> [(line: String, name: String, value: String)] {
        if rng.chance(0.05) { return [] }
        var lines: [(String, String, String)] = []
        func add(_ name: String, _ value: String) {
            let spacing = rng.weighted([(10, ": "), (2, ":"), (1, ":   "), (1, " : "), (1, ":\t")])
            lines.append((name + spacing + value + rng.weighted([(10, ""), (1, " "), (1, "\t")]), name, value))
        }
        if rng.chance(0.8) {
            var value = "form-data; name=\"\(fieldName(&rng))\""
            if rng.chance(0.5) { value += "; filename=\"\(fieldName(&rng)).img\"" }
            add(rng.pick(["Content-Disposition", "content-disposition", "CONTENT-DISPOSITION"]), value)
        }
        if rng.chance(0.4) { add("Content-Type", rng.pick(["application/octet-stream", "text/plain; charset=utf-8", "application/json"])) }
        for index in 0..<rng.smallCount(max: 6) { add(rng.pick(["X-Fuzz-\(index)", "x-fuzz-\(index)", "X-Fuzz-\(rng.below(3))"]), headerValue(&rng)) }
        if rng.chance(0.01) {  // around the header-size limit
            let length = MultipartParser.maximumHeaderBytes + rng.int(-40...40)
            add("X-Big", String(repeating: "v", count: max(0, length)))
        }
        lines.shuffle(using: &rng)
        return lines
    }

    /// Content with near-miss delimiters; never the delimiter itself (a composer's duty).
    static func content(_ rng: inout FuzzRNG, boundary: String) -> [UInt8] {
        let target: Int = rng.weighted([(10, 0), (20, rng.int(1...16)), (40, rng.int(17...512)), (25, rng.int(513...8192)), (5, rng.int(8193...70_000))])
        let b = Array(boundary.utf8)
        var changed = b
        if !changed.isEmpty { changed[rng.below(changed.count)] ^= 0x20 }
        let tokens: [[UInt8]] = [
            [13, 10], [13, 10, 45, 45], Array("--".utf8) + b, [13, 10, 45, 45] + b.dropLast(), [13, 10, 45, 45] + b.dropLast() + [88],
            [13, 10, 45] + b, [13, 10, 45, 45] + changed, [13, 10, 13, 10], [13], [10], b, [45, 45], [13, 10, 45, 45, 13, 10],
        ]
        var out: [UInt8] = []
        out.reserveCapacity(target + 80)
        while out.count < target {
            if rng.chance(0.15) { out += rng.pick(tokens) } else { out += rng.bytes(min(target - out.count, rng.int(1...2048))) }
        }
        // End on a partial delimiter sometimes: the parser must hold it back, then give it up.
        if rng.chance(0.1) { out += ([13, 10, 45, 45] + b).prefix(rng.int(1...(b.count + 3))) }
        return clean(out, boundary: boundary)
    }

    /// Breaks any delimiter inside `content + delimiter` before its end, so the content ends
    /// exactly where the part's delimiter starts.
    static func clean(_ content: [UInt8], boundary: String) -> [UInt8] {
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var out = content
        for _ in 0..<64 {
            guard let hit = MultipartReference.find(delimiter, in: out + delimiter, from: 0), hit < out.count else { return out }
            out.insert(88, at: min(out.count, hit + 2))  // CRLF X -- ...
        }
        return []
    }

    static func body(_ rng: inout FuzzRNG) -> GeneratedBody {
        let boundary = boundary(&rng)
        let delimiter = Array("\r\n--\(boundary)".utf8)
        let delimiterLine = Array("--\(boundary)".utf8)
        var bytes: [UInt8] = []
        var expected = MultipartOutcome()
        // The preamble is ignored; it ends with the CRLF of the first delimiter, and nothing
        // in it may form a delimiter before that.
        if rng.chance(0.3) {
            let preamble = clean(rng.chance(0.5) ? Array("This is a multi-part message in MIME format.".utf8) : content(&rng, boundary: boundary), boundary: boundary) + [13, 10]
            if MultipartReference.find(delimiter, in: [13, 10] + preamble + delimiterLine, from: 0) == preamble.count { bytes = preamble }
        }
        var failed = false
        for _ in 0..<rng.weighted([(2, 0), (10, 1), (10, 2), (5, rng.int(3...6))]) {
            let headerLines = headers(&rng, boundary: boundary)
            let data = content(&rng, boundary: boundary)
            bytes += delimiterLine + transportPadding(&rng) + [13, 10]
            var block: [UInt8] = []
            var parsedHeaders: [String: String] = [:]
            for (index, header) in headerLines.enumerated() {
                if index > 0 { block += [13, 10] }
                block += Array(header.line.utf8)
                parsedHeaders[header.name.lowercased()] = header.value
            }
            if block.count > MultipartParser.maximumHeaderBytes && !failed {
                expected.error = "a multipart part has more than \(MultipartParser.maximumHeaderBytes) bytes of headers"
                failed = true
            }
            if !headerLines.isEmpty { block += [13, 10] }
            bytes += block + [13, 10] + data + [13, 10]
            if !failed { expected.parts.append(.init(headers: parsedHeaders, data: data, complete: true)) }
        }
        if failed { expected.parts = [] }
        // How it ends: closed (with or without an epilogue), or cut short in one of the states.
        switch rng.below(20) {
        case 0 where !expected.parts.isEmpty && !failed:
            // No closing delimiter: the last part is unfinished, and its last bytes are held
            // back as the possible start of a delimiter.
            bytes.removeLast(2)
            let last = expected.parts.count - 1
            expected.parts[last].complete = false
            expected.parts[last].data.removeLast(min(expected.parts[last].data.count, delimiter.count - 1))
        case 1:  // ends right after a delimiter
            bytes += delimiterLine
        case 2:  // ends after a delimiter line that opens a part that never comes
            bytes += delimiterLine + [13, 10]
        default:
            bytes += delimiterLine + [45, 45] + (rng.chance(0.5) ? [] : [13, 10] + rng.bytes(rng.int(0...64)))
            if !failed {
                expected.ended = true
                expected.finished = true
            }
        }
        let usable = !boundary.isEmpty && boundary.utf8.count <= 70
        return GeneratedBody(boundary: boundary, bytes: bytes, expected: usable ? expected : nil)
    }

    static func transportPadding(_ rng: inout FuzzRNG) -> [UInt8] {
        rng.chance(0.9) ? [] : (0..<rng.int(1...3)).map { _ in rng.pick([32, 9] as [UInt8]) }
    }

    /// Mutations aimed at the format: lost CR or LF around delimiters, stray delimiters,
    /// boundary typos, plus the generic byte moves.
    static func mutateBody(_ bytes: [UInt8], boundary: String, rng: inout FuzzRNG) -> [UInt8] {
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var out = bytes
        for _ in 0..<rng.int(1...3) {
            var hits: [Int] = []
            var from = 0
            while let hit = MultipartReference.find(delimiter, in: out, from: from), hits.count < 16 {
                hits.append(hit)
                from = hit + 1
            }
            switch rng.below(6) {
            case 0 where !hits.isEmpty:  // drop a CR or LF of a delimiter, or of the line after it
                let hit = rng.pick(hits)
                let candidates = [hit, hit + 1, hit + delimiter.count, hit + delimiter.count + 1].filter { $0 < out.count && (out[$0] == 13 || out[$0] == 10) }
                if let at = candidates.isEmpty ? nil : rng.pick(candidates) { out.remove(at: at) }
            case 1 where !hits.isEmpty:  // a boundary typo
                let at = rng.pick(hits) + 4 + rng.below(max(1, delimiter.count - 4))
                if at < out.count { out[at] ^= 0x01 }
            case 2:  // a stray delimiter, or a whole extra delimiter line
                out.insert(contentsOf: rng.chance(0.5) ? delimiter : delimiter + [13, 10], at: rng.below(out.count + 1))
            default:
                out = mutate(out, rng: &rng, rounds: 1, interesting: [delimiter, [13, 10], [45, 45], [13, 10, 13, 10], Array("Content-Disposition: form-data; name=\"x\"\r\n".utf8), [58]])
            }
        }
        return out
    }

    /// Several ways to cut the body into pieces.
    static func cutSets(for bytes: [UInt8], boundary: String, rng: inout FuzzRNG) -> [[Int]] {
        let n = bytes.count
        guard n > 1 else { return [[]] }
        var sets: [[Int]] = []
        // Random cuts.
        sets.append((0..<rng.int(1...min(n - 1, 24))).map { _ in rng.int(1...(n - 1)) }.sorted())
        // Cuts around every delimiter: before it, inside it, just after it.
        let delimiter = Array("\r\n--\(boundary)".utf8)
        var around: [Int] = []
        var from = 0
        let data: [UInt8] = [13, 10] + bytes
        while let hit = MultipartReference.find(delimiter, in: data, from: from), around.count < 64 {
            for offset in [-1, 0, 1, 2, 3, delimiter.count - 1, delimiter.count, delimiter.count + 1, delimiter.count + 2, delimiter.count + 3] {
                let cut = hit - 2 + offset
                if cut > 0 && cut < n { around.append(cut) }
            }
            if rng.chance(0.5) { around.append(min(n - 1, max(1, hit - 2 + rng.below(delimiter.count + 4)))) }
            from = hit + 1
        }
        sets.append(Array(Set(around)).sorted())
        // Tiny pieces for small bodies (every state boundary gets crossed).
        if n <= 1024 && rng.chance(0.5) {
            var cuts: [Int] = []
            var at = 0
            while true {
                at += rng.int(1...3)
                if at >= n { break }
                cuts.append(at)
            }
            sets.append(cuts)
        } else {
            let piece = max(1, delimiter.count + rng.int(-1...1))
            sets.append(Array(stride(from: piece, to: n, by: piece)))
        }
        return sets
    }

    /// Deterministic cut sets for shrinking: bytewise for small bodies, then fixed sizes.
    static func fixedCutSets(boundary: String) -> (Int) -> [[Int]] {
        let d = "\r\n--\(boundary)".utf8.count
        return { n in
            var sets: [[Int]] = [Array(stride(from: 1, to: max(1, n), by: 1))]
            for piece in [2, 3, d - 1, d, d + 1] where piece >= 1 { sets.append(Array(stride(from: piece, to: max(piece, n), by: piece))) }
            return sets
        }
    }
}
