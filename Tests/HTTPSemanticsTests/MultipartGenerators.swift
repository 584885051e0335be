import DepotTestSupport
import Foundation

@testable import HTTPSemantics

enum MultipartGenerator {
    static let bchars = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?")

    /// A boundary as RFC 2046 allows: 1 to 70 bchars, spaces inside but not last.
    static func rfcBoundary(_ rng: inout some RandomNumberGenerator) -> String {
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

    static func boundary(_ rng: inout some RandomNumberGenerator) -> String {
        switch rng.below(100) {
        case 0: return ""
        case 1: return String(repeating: "b", count: rng.int(71...90))  // refused by init
        case 2: return String((0..<rng.int(1...20)).map { _ in Character(Unicode.Scalar(UInt8(rng.int(33...126)))) })
        default: return rfcBoundary(&rng)
        }
    }

    static func fieldName(_ rng: inout some RandomNumberGenerator) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
        return rng.chance(0.5) ? rng.pick(["file", "name", "properties", "disk_format", "container_format", "visibility"])
            : String((0..<rng.int(1...20)).map { _ in rng.pick(alphabet) })
    }

    static func headerValue(_ rng: inout some RandomNumberGenerator) -> String {
        let pieces = ["a", "b", "Z", "0", "9", " ", ":", ";", "=", "\"", "/", "é", "日本", "🚀", "-", "_", ".", ",", "x y", "\t"]
        var text = (0..<rng.int(0...24)).map { _ in rng.pick(pieces) }.joined()
        // Values are read trimmed: generate them that way so the expectation is exact.
        text = text.trimmingCharacters(in: .whitespaces)
        return text
    }

    /// A part's header lines (name, value, and the spacing around the colon).
    static func headers(_ rng: inout some RandomNumberGenerator, boundary: String) -> [(line: String, name: String, value: String)] {
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
    static func content(_ rng: inout some RandomNumberGenerator, boundary: String) -> [UInt8] {
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

    static func body(_ rng: inout some RandomNumberGenerator) -> GeneratedBody {
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

    static func transportPadding(_ rng: inout some RandomNumberGenerator) -> [UInt8] {
        rng.chance(0.9) ? [] : (0..<rng.int(1...3)).map { _ in rng.pick([32, 9] as [UInt8]) }
    }

    /// Mutations aimed at the format: lost CR or LF around delimiters, stray delimiters,
    /// boundary typos, plus the generic byte moves.
    static func mutateBody(_ bytes: [UInt8], boundary: String, rng: inout some RandomNumberGenerator) -> [UInt8] {
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
    static func cutSets(for bytes: [UInt8], boundary: String, rng: inout some RandomNumberGenerator) -> [[Int]] {
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
            // Bytewise only while that stays cheap: shrinking runs the check thousands of times.
            var sets: [[Int]] = n <= 4096 ? [Array(stride(from: 1, to: max(1, n), by: 1))] : []
            for piece in [2, 3, d - 1, d, d + 1] where piece >= 1 { sets.append(Array(stride(from: piece, to: max(piece, n), by: piece))) }
            return sets
        }
    }
}

/// One input of the streaming property: a body and the ways to cut it into pieces.
struct MultipartInput: Sendable, CustomStringConvertible {
    var body: GeneratedBody
    var cuts: [[Int]]

    static func generate(_ rng: inout some RandomNumberGenerator) -> MultipartInput {
        var body = MultipartGenerator.body(&rng)
        if rng.chance(0.3) {
            body.bytes = MultipartGenerator.mutateBody(body.bytes, boundary: body.boundary, rng: &rng)
            body.expected = nil
        }
        return MultipartInput(body: body, cuts: MultipartGenerator.cutSets(for: body.bytes, boundary: body.boundary, rng: &rng))
    }

    /// Shrinks the bytes (keeping the boundary) under fixed cut sets and without the known
    /// parts: a failure that depends on those does not shrink.
    static func shrink(_ input: MultipartInput) -> some Sequence<MultipartInput> & SendableMetatype {
        let fixedCuts = MultipartGenerator.fixedCutSets(boundary: input.body.boundary)
        return FuzzShrink.removals(input.body.bytes).lazy.map { bytes in
            MultipartInput(body: GeneratedBody(boundary: input.body.boundary, bytes: bytes, expected: nil), cuts: fixedCuts(bytes.count))
        }
    }

    var description: String {
        "boundary \(fuzzQuote(body.boundary)), body \(fuzzQuote(body.bytes, limit: 300))\(body.expected == nil ? "" : " built from known parts")"
    }
}

/// One input of the parameters property: a Content-Type with a boundary and a
/// Content-Disposition with a name and maybe a filename, and the values they carry.
struct MultipartParametersInput: Sendable {
    var contentType: String
    var boundary: String
    var disposition: String
    var name: String
    var filename: String?

    static func generate(_ rng: inout some RandomNumberGenerator) -> MultipartParametersInput {
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
        return MultipartParametersInput(contentType: contentType, boundary: boundary, disposition: disposition, name: name, filename: filename)
    }
}
