import DepotTestSupport
import Foundation
import Testing

@testable import DepotConfig

/// Property-based fuzzing of the configuration parser: random YAML trees (deep nesting,
/// random indentation, quoting, comments, CRLF) round-trip through Yams and
/// `YAMLValue.parse` with their line numbers; random configurations round-trip through
/// `DepotConfiguration.parse` to the expected values; an injected mistake is reported on its
/// own line; and mutated or random text never crashes and never names a line outside the text.
@Suite struct ConfigFuzzTests {
    static let defaultInputs = 15_000

    @Test func yamlTreesRoundTrip() async {
        let report = await fuzz(
            "yaml-tree", defaultInputs: Self.defaultInputs, cpuPerInput: .milliseconds(3),
            generate: { rng, counters -> (tree: YTree, text: String, lines: [Int: Int]) in
                let tree = YAMLTreeGenerator.document(&rng)
                var renderer = YAMLRenderer(rng: FuzzRNG(seed: rng.next()))
                let text = renderer.render(tree)
                counters.count(renderer.crlf ? "crlf" : "lf")
                if renderer.maxDepth > 10 { counters.count("deep") }
                return (tree, text, renderer.keyLines)
            },
            check: { input, _ in
                let parsed: YAMLValue
                do { parsed = try YAMLValue.parse(input.text) } catch {
                    return "refused \(fuzzQuote(input.text)): \(error)"
                }
                if let difference = YAMLCompare.difference(parsed, input.tree, lines: input.lines, at: "root") {
                    return "\(fuzzQuote(input.text)): \(difference)"
                }
                return nil
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    @Test func configurationsRoundTrip() async {
        let report = await fuzz(
            "config", defaultInputs: Self.defaultInputs, cpuPerInput: .milliseconds(3),
            generate: { rng, _ -> (text: String, expected: DepotConfiguration, mistake: (line: Int?, what: String)?) in
                var generated = ConfigGenerator.configuration(&rng)
                let injected = rng.chance(0.25) ? ConfigGenerator.injectMistake(&generated, rng: &rng) : nil
                var renderer = YAMLRenderer(rng: FuzzRNG(seed: rng.next()))
                let text = renderer.render(.map(generated.entries))
                return (text, generated.expected, injected.map { (renderer.keyLines[$0.entryID], $0.what) })
            },
            check: { input, counters in
                do {
                    let parsed = try DepotConfiguration.parse(input.text, path: "fuzz.yaml")
                    if let mistake = input.mistake { return "accepted \(mistake.what) in \(fuzzQuote(input.text))" }
                    counters?.count("valid")
                    if parsed != input.expected { return "\(fuzzQuote(input.text)) parsed as\n\(parsed)\nexpected\n\(input.expected)" }
                } catch let error as ConfigurationError {
                    guard let mistake = input.mistake else { return "refused \(fuzzQuote(input.text)): \(error)" }
                    counters?.count("mistake")
                    if error.line != mistake.line {
                        return "\(mistake.what) is on line \(mistake.line ?? -1), the error names line \(error.line ?? -1) (\(error)) in \(fuzzQuote(input.text))"
                    }
                } catch {
                    return "an error that is not a ConfigurationError: \(error)"
                }
                return nil
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    @Test func mutatedTextNeverCrashesAndNamesItsLine() async {
        let report = await fuzz(
            "config-mutation", defaultInputs: Self.defaultInputs, cpuPerInput: .milliseconds(3),
            generate: { rng, counters -> (text: String, tabLine: Int?) in
                let generated = ConfigGenerator.configuration(&rng)
                var renderer = YAMLRenderer(rng: FuzzRNG(seed: rng.next()))
                let valid = rng.chance(0.7) ? renderer.render(.map(generated.entries)) : renderer.render(YAMLTreeGenerator.document(&rng))
                if rng.chance(0.2) {
                    // A tab in one line's indentation: refused, on that line.
                    counters.count("tab")
                    // Split on LF scalars, so a CRLF line keeps its CR.
                    var lines = valid.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
                    // A line with content: YAML lets a blank last line hold a tab.
                    let written = lines.indices.filter { !lines[$0].allSatisfy { $0 == " " || $0 == "\r" } }
                    if let index = written.isEmpty ? nil : rng.pick(written) {
                        lines[index] = rng.pick(["\t", "\t  ", "\t\t"]) + lines[index]
                        return (lines.joined(separator: "\n"), index + 1)
                    }
                }
                let bytes = mutate(Array(valid.utf8), rng: &rng, rounds: rng.int(1...6), interesting: ConfigGenerator.interesting)
                return (String(decoding: bytes, as: UTF8.self), nil)
            },
            check: { input, counters in ConfigMutationCheck.failure(input.text, tabLine: input.tabLine, counters: counters) },
            explain: { input in
                let minimal = shrink(input.text) { ConfigMutationCheck.failure($0, tabLine: nil, counters: nil) != nil }
                return "text \(fuzzQuote(input.text)), minimal \(fuzzQuote(minimal))"
            })
        print(report)
        #expect(report.passed, "\(report.failureText)")
    }

    /// Seeds found by fuzzing, kept as plain regression cases.
    @Test func regressions() throws {
        // CRLF line ends: "\r\n" is one Character, so splitting on "\n" saw one long line and
        // data_dir swallowed the rest of the file.
        let crlf = try DepotConfiguration.parse("data_dir: /srv/depot\r\nlog_level: debug\r\n")
        #expect(crlf.dataDirectory == "/srv/depot")
        #expect(crlf.logLevel == "debug")
        // A list at its key's indentation followed by the next key of the same map.
        let config = try DepotConfiguration.parse("clouds:\n- owner: a\n  region: b\ncache:\n  size: 1GiB\n")
        #expect(config.clouds.map(\.name) == ["a_b"])
        #expect(config.cacheSize == 1 << 30)
        // ... whose first item is a bare "-".
        #expect(try YAMLValue.parse("k:\n-\n- a\n") == .map([("k", .list([.null, .scalar("a")]), 1)]))
        // Escaped quotes inside quotes: a list item is not a key, and a "#" stays in the value.
        #expect(try YAMLValue.parse("k:\n- \"a\\\": b\"\n- 'it''s: x'\n") == .map([("k", .list([.scalar("a\": b"), .scalar("it's: x")]), 1)]))
        #expect(try DepotConfiguration.parse("admin_token: \"x\\\" # y\" # note\n").adminToken == "x\" # y")
        // Durations are rounded to the millisecond, not truncated.
        #expect(try DepotConfiguration.parse("auth:\n  decision_ttl: 4007ms\n").decisionTTL == .milliseconds(4007))
        #expect(parseDuration("1.001") == .milliseconds(1001))
    }
}

enum ConfigMutationCheck {
    static func failure(_ text: String, tabLine: Int?, counters: FuzzCounters?) -> String? {
        if let tabLine {
            // YAML forbids tabs in indentation: a line with content that starts with one is
            // refused there.
            do {
                _ = try YAMLValue.parse(text)
                return "a tab-indented line \(tabLine) was accepted: \(fuzzQuote(text))"
            } catch {
                if error.line != tabLine { return "the tab is on line \(tabLine), the error names line \(error.line): \(fuzzQuote(text))" }
                return error.message.contains("not tabs") ? nil : "the error on the tab's line does not say to indent with spaces: \(error)"
            }
        }
        // Lines as libyaml counts them: LF, CR, CRLF, NEL, LS and PS end a line.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: YAMLError.isLineBreak)
        do {
            let value = try YAMLValue.parse(text)
            if let problem = YAMLCompare.keyLineProblem(value, lines: lines) { return problem }
        } catch {
            if !(1...lines.count).contains(error.line) { return "YAML error on line \(error.line) of a \(lines.count)-line text: \(error)" }
        }
        do {
            _ = try DepotConfiguration.parse(text)
            counters?.count("accepted")
        } catch {
            counters?.count("refused")
            if let line = error.line {
                if !(1...lines.count).contains(line) { return "config error on line \(line) of a \(lines.count)-line text: \(error)" }
            } else if !(error.message.contains("must not be above cache.high_watermark") || error.message.contains("two clouds are named")) {
                return "an error without a line: \(error)"
            }
        }
        return nil
    }
}

// MARK: Trees

indirect enum YTree {
    case scalar(String)
    case null
    case map([YEntry])
    case list([YTree])
}

struct YEntry {
    var key: String
    var value: YTree
    /// Identifies the entry to the renderer, which records its line.
    var id: Int
}

enum YAMLCompare {
    /// Where `value` differs from `tree`, or nil; map entries must also be on their lines.
    static func difference(_ value: YAMLValue, _ tree: YTree, lines: [Int: Int], at path: String) -> String? {
        switch (value, tree) {
        case (.null, .null): return nil
        case let (.scalar(a), .scalar(b)): return a == b ? nil : "\(path): \(fuzzQuote(a)), expected \(fuzzQuote(b))"
        case let (.list(a), .list(b)):
            guard a.count == b.count else { return "\(path): \(a.count) items, expected \(b.count)" }
            for (index, (x, y)) in zip(a, b).enumerated() {
                if let problem = difference(x, y, lines: lines, at: "\(path)[\(index)]") { return problem }
            }
            return nil
        case let (.map(a), .map(b)):
            guard a.map(\.key) == b.map(\.key) else { return "\(path): keys \(a.map(\.key)), expected \(b.map(\.key))" }
            for (x, y) in zip(a, b) {
                if x.line != lines[y.id] { return "\(path).\(x.key): on line \(x.line), written on line \(lines[y.id] ?? -1)" }
                if let problem = difference(x.value, y.value, lines: lines, at: "\(path).\(x.key)") { return problem }
            }
            return nil
        default: return "\(path): \(value), expected \(tree)"
        }
    }

    /// Every map entry's line exists and contains its key.
    static func keyLineProblem(_ value: YAMLValue, lines: [Substring]) -> String? {
        switch value {
        case let .map(entries):
            for entry in entries {
                guard (1...lines.count).contains(entry.line) else { return "key \(entry.key) on line \(entry.line) of \(lines.count)" }
                // As written: a key with escapes or a doubled '' differs from its text.
                let line = lines[entry.line - 1]
                if !entry.key.isEmpty && !line.contains(entry.key) && !line.contains("\\") && !line.contains(entry.key.replacingOccurrences(of: "'", with: "''")) {
                    return "key \(fuzzQuote(entry.key)) is not on its line \(entry.line): \(fuzzQuote(String(line)))"
                }
                if let problem = keyLineProblem(entry.value, lines: lines) { return problem }
            }
        case let .list(items):
            for item in items {
                if let problem = keyLineProblem(item, lines: lines) { return problem }
            }
        default: break
        }
        return nil
    }
}

enum YAMLTreeGenerator {
    /// Entry ids, unique across the properties running at once.
    final class IDSource: @unchecked Sendable {
        private let lock = NSLock()
        private var last = 0
        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            last += 1
            return last
        }
    }

    static let ids = IDSource()

    static func key(_ rng: inout FuzzRNG) -> String {
        if rng.chance(0.1) { return rng.pick(["a: b", "x #y", "- item", "#hash", "-", "key with spaces", "k:", "日本", "🚀", "é", "a'b", "---"]) }
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-./")
        var text = String((0..<rng.int(1...12)).map { _ in rng.pick(alphabet) })
        if text.hasPrefix("-") { text = "k" + text }
        return text
    }

    static func scalar(_ rng: inout FuzzRNG) -> String {
        let pieces = [
            "a", "b", "z", "Q", "0", "7", " ", "-", "_", ".", "/", ":", "#", "'", "\"", "\\", "é", "ß", "日本", "🚀", "Ω", "\t", "!", "%", "@", "[", "]",
            "{", "}", ",", "&", "*", "|", ">", "~", "=", "?", " #", ": ", "word", "value", "- ", "\u{00A0}",
        ]
        if rng.chance(0.02) { return "line one\nline two" }
        return (0..<rng.smallCount(max: 14)).map { _ in rng.pick(pieces) }.joined()
    }

    static func entries(_ rng: inout FuzzRNG, depth: Int, budget: inout Int) -> [YEntry] {
        var seen: Set<String> = []
        var out: [YEntry] = []
        for _ in 0..<rng.int(1...(depth > 6 ? 2 : 5)) {
            let name = key(&rng)
            guard seen.insert(name).inserted else { continue }
            budget -= 1
            out.append(YEntry(key: name, value: value(&rng, depth: depth, budget: &budget), id: newID()))
        }
        return out
    }

    static func newID() -> Int { ids.next() }

    static func value(_ rng: inout FuzzRNG, depth: Int, budget: inout Int) -> YTree {
        let nest = budget > 0 && depth < 60
        switch rng.below(nest ? 10 : 6) {
        case 0..<5: return .scalar(scalar(&rng))
        case 5: return .null
        case 6..<8: return .map(entries(&rng, depth: depth + 1, budget: &budget))
        default: return .list(items(&rng, depth: depth + 1, budget: &budget))
        }
    }

    static func items(_ rng: inout FuzzRNG, depth: Int, budget: inout Int) -> [YTree] {
        (0..<rng.int(1...(depth > 6 ? 2 : 5))).map { _ in
            budget -= 1
            return value(&rng, depth: depth, budget: &budget)
        }
    }

    static func document(_ rng: inout FuzzRNG) -> YTree {
        if rng.chance(0.08) {
            // Deep nesting: a chain of maps and lists.
            var tree = YTree.scalar(scalar(&rng))
            for _ in 0..<rng.int(15...60) {
                tree = rng.chance(0.7) ? .map([YEntry(key: key(&rng), value: tree, id: newID())]) : .list([tree])
            }
            return .map([YEntry(key: "root", value: tree, id: newID())])
        }
        var budget = rng.int(3...60)
        return rng.chance(0.85) ? .map(entries(&rng, depth: 0, budget: &budget)) : .list(items(&rng, depth: 0, budget: &budget))
    }
}

/// Writes a tree as block YAML with random style: indentation per block, quoting per
/// scalar, blank and comment lines, trailing comments and spaces, `---`, LF or CRLF.
struct YAMLRenderer {
    var rng: FuzzRNG
    private(set) var lines: [String] = []
    /// The line each map entry (by id) was written on, 1-based.
    private(set) var keyLines: [Int: Int] = [:]
    private(set) var crlf = false
    private(set) var maxDepth = 0
    private var noise = 0.0

    init(rng: FuzzRNG) { self.rng = rng }

    mutating func render(_ tree: YTree) -> String {
        lines = []
        keyLines = [:]
        noise = rng.pick([0.0, 0.05, 0.3])
        if rng.chance(0.1) { lines.append("---") }
        let indent = rng.chance(0.8) ? 0 : rng.int(1...4)
        switch tree {
        case let .map(entries): renderMap(entries, indent: indent, depth: 0)
        case let .list(items): renderList(items, indent: indent, depth: 0)
        case .scalar, .null: break
        }
        crlf = rng.chance(0.25)
        let mixed = crlf && rng.chance(0.3)
        var text = ""
        for (index, line) in lines.enumerated() {
            if index > 0 { text += crlf && (!mixed || rng.chance(0.5)) ? "\r\n" : "\n" }
            text += line
        }
        if rng.chance(0.7) { text += crlf ? "\r\n" : "\n" }
        return text
    }

    private mutating func emit(_ line: String, entry: Int? = nil) {
        if rng.chance(noise) {
            lines.append(rng.weighted([
                (3, ""), (1, String(repeating: " ", count: rng.int(1...9))),
                (3, String(repeating: " ", count: rng.int(0...9)) + "# " + rng.pick(["comment", "key: value", "- item", "'quoted", "\"x\" # y", "日本"])),
            ]))
        }
        var text = line
        if rng.chance(0.05) { text += String(repeating: " ", count: rng.int(1...3)) }
        lines.append(text)
        if let entry { keyLines[entry] = lines.count }
    }

    private mutating func comment() -> String {
        rng.chance(noise) ? rng.pick([" # note", "  # a: b", " #", " # 'x"]) : ""
    }

    mutating func renderMap(_ entries: [YEntry], indent: Int, depth: Int, firstPrefix: String? = nil) {
        maxDepth = max(maxDepth, depth)
        for (index, entry) in entries.enumerated() {
            let pad = index == 0 && firstPrefix != nil ? firstPrefix! : String(repeating: " ", count: indent)
            let key = renderKey(entry.key)
            switch entry.value {
            case let .scalar(value):
                emit(pad + key + ":" + rng.pick([" ", " ", "  "]) + renderScalar(value) + comment(), entry: entry.id)
            case .null:
                emit(pad + key + ":" + comment(), entry: entry.id)
            case let .map(children):
                emit(pad + key + ":" + comment(), entry: entry.id)
                renderMap(children, indent: indent + rng.int(1...4), depth: depth + 1)
            case let .list(items):
                emit(pad + key + ":" + comment(), entry: entry.id)
                // A list may sit at its key's indentation.
                renderList(items, indent: indent + rng.int(0...3), depth: depth + 1)
            }
        }
    }

    mutating func renderList(_ items: [YTree], indent: Int, depth: Int) {
        maxDepth = max(maxDepth, depth)
        let pad = String(repeating: " ", count: indent)
        for item in items {
            switch item {
            case let .scalar(value):
                emit(pad + "-" + String(repeating: " ", count: rng.int(1...3)) + renderScalar(value) + comment())
            case .null:
                emit(pad + "-" + comment())
            case let .map(entries):
                if rng.chance(0.7) {
                    // "- key: value", the further keys under the first one.
                    let gap = rng.int(1...3)
                    renderMap(entries, indent: indent + 1 + gap, depth: depth + 1, firstPrefix: pad + "-" + String(repeating: " ", count: gap))
                } else {
                    emit(pad + "-" + comment())
                    renderMap(entries, indent: indent + rng.int(1...4), depth: depth + 1)
                }
            case let .list(children):
                emit(pad + "-" + comment())
                renderList(children, indent: indent + rng.int(1...4), depth: depth + 1)
            }
        }
    }

    mutating func renderKey(_ key: String) -> String {
        YAMLQuoting.plainIsSafe(key) && rng.chance(0.8) ? key : quoted(key)
    }

    /// A scalar's text: plain where YAML 1.1 reads it back as the same text (not null, not an
    /// indicator, no `: ` or ` #`), else single- or double-quoted.
    mutating func renderScalar(_ value: String) -> String {
        if value.isEmpty { return rng.pick(["''", "\"\""]) }
        return YAMLQuoting.plainIsSafe(value) && rng.chance(0.6) ? value : quoted(value)
    }

    mutating func quoted(_ value: String) -> String {
        if !value.contains("\n") && !value.contains("\t") && rng.chance(0.4) {
            return "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
        }
        var out = "\""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += rng.chance(0.5) ? "\\t" : "\t"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}

/// When a plain (unquoted) scalar reads back as its own text: what the renderer may leave
/// unquoted (YAML 1.1 section 9.1.3, and the null forms of its type repository).
enum YAMLQuoting {
    static func plainIsSafe(_ text: String) -> Bool {
        guard let first = text.first, let last = text.last else { return false }
        if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first == " " || last == " " || last == ":" { return false }
        if text.contains(": ") || text.contains(" #") || text.contains("\t") || text.contains("\n") || text.contains("\r") { return false }
        return !["~", "null", "Null", "NULL", "<<", "---", "..."].contains(text)
    }
}

// MARK: Configurations

struct GeneratedConfiguration {
    var expected = DepotConfiguration()
    var entries: [YEntry] = []
}

enum ConfigGenerator {
    static let interesting: [[UInt8]] = [":", ": ", "- ", "\t", "\"", "'", "#", " #", "\r\n", "\n", "  ", "[", "{", "&", "\\", "---"].map { Array($0.utf8) }

    static func entry(_ key: String, _ value: YTree) -> YEntry { YEntry(key: key, value: value, id: YAMLTreeGenerator.newID()) }

    static func text(_ rng: inout FuzzRNG) -> String {
        let pieces = ["a", "Z", "0", "-", "_", ".", "/", " ", "é", "日本", "🚀", "#", "'", "\"", ":", "\\", "x y", "%", "$", "="]
        var value = (0..<rng.int(1...16)).map { _ in rng.pick(pieces) }.joined()
        if rng.chance(0.5) { value = value.trimmingCharacters(in: .whitespaces) }
        return value.isEmpty ? "v" : value
    }

    static func size(_ rng: inout FuzzRNG) -> (String, UInt64) {
        let n = UInt64(rng.int(0...100_000))
        let units: [(String, UInt64)] = [
            ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000),
            ("KB", 1000), ("kB", 1000), ("B", 1),
        ]
        switch rng.below(6) {
        case 0: return (String(n), n)
        case 1:
            let big = rng.next() >> UInt64(rng.int(0...40))
            return (String(big), big)
        case 2:
            let (unit, factor) = rng.pick(units.prefix(4))
            return ("\(n).5\(unit)", n * factor + factor / 2)
        default:
            let (unit, factor) = rng.pick(units)
            return ("\(n)\(rng.pick(["", "", " "]))\(unit)", n * factor)
        }
    }

    static func duration(_ rng: inout FuzzRNG) -> (String, Duration) {
        let n = Int64(rng.int(0...100_000))
        let (unit, ms): (String, Int64) = rng.pick([("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("", 1000)])
        return ("\(n)\(unit)", .milliseconds(n * ms))
    }

    static func fractionText(_ rng: inout FuzzRNG, percent: Int) -> (String, Double) {
        if rng.chance(0.5) { return ("\(percent)%", Double(percent) / 100) }
        let text = percent == 100 ? rng.pick(["1", "1.0"]) : String(format: "0.%02d", percent)
        return (text, Double(text)!)
    }

    static func bool(_ rng: inout FuzzRNG) -> (String, Bool) {
        let value = rng.chance(0.5)
        let text = rng.pick(value ? ["true", "yes", "on"] : ["false", "no", "off"])
        return (rng.chance(0.2) ? text.uppercased() : text, value)
    }

    static func name(_ rng: inout FuzzRNG, region: Bool) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-." + (region ? "_" : ""))
        if rng.chance(0.05) { return rng.pick(["Ωmega", "région", "東京"]) }
        return String((0..<rng.int(1...12)).map { _ in rng.pick(alphabet) })
    }

    static func configuration(_ rng: inout FuzzRNG) -> GeneratedConfiguration {
        var out = GeneratedConfiguration()
        var entries: [YEntry] = []
        if rng.chance(0.5) {
            let port = rng.int(0...65535)
            let (hostText, host) = rng.pick([("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("localhost", "localhost"), ("[::1]", "::1"), ("[fe80::1%eth0]", "fe80::1%eth0"), ("::1", "::1"), ("depot.example", "depot.example")])
            entries.append(entry("listen", .scalar("\(hostText):\(port)")))
            (out.expected.listenHost, out.expected.listenPort) = (host, port)
        }
        if rng.chance(0.5) {
            let value = text(&rng)
            entries.append(entry("data_dir", .scalar(value)))
            out.expected.dataDirectory = value
        }
        if rng.chance(0.4) {
            let level = rng.pick(["trace", "debug", "info", "notice", "warning", "error", "critical"])
            entries.append(entry("log_level", .scalar(rng.chance(0.2) ? level.uppercased() : level)))
            out.expected.logLevel = level
        }
        if rng.chance(0.3) {
            let value = text(&rng)
            entries.append(entry("admin_token", .scalar(value)))
            out.expected.adminToken = value
        }
        if rng.chance(0.5) {
            var cache: [YEntry] = []
            if rng.chance(0.7) {
                let (text, bytes) = size(&rng)
                cache.append(entry("size", .scalar(text)))
                out.expected.cacheSize = bytes
            }
            if rng.chance(0.5) {
                let high = rng.int(1...100), low = rng.int(1...high)
                let (highText, highValue) = fractionText(&rng, percent: high), (lowText, lowValue) = fractionText(&rng, percent: low)
                cache.append(entry("high_watermark", .scalar(highText)))
                cache.append(entry("low_watermark", .scalar(lowText)))
                (out.expected.highWatermark, out.expected.lowWatermark) = (highValue, lowValue)
            }
            if rng.chance(0.4) {
                let (text, bytes) = size(&rng)
                cache.append(entry("min_free_disk", .scalar(text)))
                out.expected.minimumFreeDisk = bytes
            }
            cache.shuffle(using: &rng)
            entries.append(entry("cache", cache.isEmpty ? .null : .map(cache)))
        }
        if rng.chance(0.4) {
            var auth: [YEntry] = []
            if rng.chance(0.6) {
                let (text, value) = duration(&rng)
                auth.append(entry("decision_ttl", .scalar(text)))
                out.expected.decisionTTL = value
            }
            if rng.chance(0.6) {
                let (text, value) = duration(&rng)
                auth.append(entry("offline_grace", .scalar(text)))
                out.expected.offlineGrace = value
            }
            entries.append(entry("auth", auth.isEmpty ? .null : .map(auth)))
        }
        if rng.chance(0.3) {
            let mode = rng.pick(["write-back", "write-through"])
            entries.append(entry("upload_mode", .scalar(mode)))
            out.expected.uploadMode = mode
        }
        if rng.chance(0.3) {
            let (text, bytes) = size(&rng)
            entries.append(entry("max_upload_size", .scalar(text)))
            out.expected.maxUploadSize = bytes
        }
        if rng.chance(0.3) {
            var push: [YEntry] = []
            if rng.chance(0.6) {
                let value = rng.int(1...64)
                push.append(entry("concurrency", .scalar(rng.chance(0.1) ? "0\(value)" : String(value))))
                out.expected.pushConcurrency = value
            }
            if rng.chance(0.5) {
                let (text, value) = duration(&rng)
                push.append(entry("initial_backoff", .scalar(text)))
                out.expected.pushInitialBackoff = value
            }
            if rng.chance(0.5) {
                let (text, value) = duration(&rng)
                push.append(entry("max_backoff", .scalar(text)))
                out.expected.pushMaximumBackoff = value
            }
            entries.append(entry("push", push.isEmpty ? .null : .map(push)))
        }
        if rng.chance(0.3) {
            var limits: [YEntry] = []
            if rng.chance(0.5) {
                let value = rng.int(1...100_000)
                limits.append(entry("max_connections", .scalar(String(value))))
                out.expected.maxConnections = value
            }
            if rng.chance(0.5) {
                var (text, value) = duration(&rng)
                if value == .zero { (text, value) = ("1s", .seconds(1)) }
                limits.append(entry("header_timeout", .scalar(text)))
                out.expected.headerTimeout = value
            }
            if rng.chance(0.5) {
                var (text, value) = duration(&rng)
                if value == .zero { (text, value) = ("2m", .seconds(120)) }
                limits.append(entry("idle_timeout", .scalar(text)))
                out.expected.idleTimeout = value
            }
            if rng.chance(0.5) {
                let value = rng.int(1...512)
                limits.append(entry("max_fills", .scalar(String(value))))
                out.expected.maxFills = value
            }
            entries.append(entry("limits", limits.isEmpty ? .null : .map(limits)))
        }
        if rng.chance(0.15) {
            let (certificate, key) = (text(&rng), text(&rng))
            entries.append(entry("tls", .map([entry("certificate", .scalar(certificate)), entry("key", .scalar(key))].shuffled(using: &rng))))
            (out.expected.tlsCertificate, out.expected.tlsKey) = (certificate, key)
        }
        if rng.chance(0.6) {
            var names: Set<String> = []
            var items: [YTree] = []
            for _ in 0..<rng.int(1...3) {
                var cloud = DepotConfiguration.CloudConfiguration()
                var fields: [YEntry] = []
                if rng.chance(0.8) {
                    cloud.owner = name(&rng, region: false)
                    fields.append(entry("owner", .scalar(cloud.owner)))
                }
                if rng.chance(0.8) {
                    cloud.region = name(&rng, region: true)
                    fields.append(entry("region", .scalar(cloud.region)))
                }
                guard names.insert(cloud.name).inserted else { continue }
                if rng.chance(0.8) {
                    let url = "http\(rng.chance(0.5) ? "s" : "")://10.0.\(rng.below(256)).\(rng.below(256)):\(rng.int(1...65535))\(rng.chance(0.3) ? "/image" : "")"
                    fields.append(entry("glance_url", .scalar(url + String(repeating: "/", count: rng.smallCount(max: 3)))))
                    cloud.glanceURL = url
                }
                if rng.chance(0.3) {
                    let token = text(&rng)
                    fields.append(entry("service_token", .scalar(token)))
                    cloud.serviceToken = token
                }
                if rng.chance(0.2) {
                    let path = text(&rng)
                    fields.append(entry("ca_bundle", .scalar(path)))
                    cloud.caBundle = path
                }
                if rng.chance(0.1) {
                    let (certificate, key) = (text(&rng), text(&rng))
                    fields.append(entry("client_certificate", .scalar(certificate)))
                    fields.append(entry("client_key", .scalar(key)))
                    (cloud.clientCertificate, cloud.clientKey) = (certificate, key)
                }
                if rng.chance(0.3) {
                    let (text, value) = bool(&rng)
                    fields.append(entry("insecure", .scalar(text)))
                    cloud.insecure = value
                }
                if rng.chance(0.3) {
                    var keystone = DepotConfiguration.KeystoneConfiguration()
                    keystone.authURL = "http://keystone:\(rng.int(1...65535))/v3"
                    var sub = [entry("auth_url", .scalar(keystone.authURL))]
                    if rng.chance(0.5) {
                        (keystone.username, keystone.password, keystone.project) = (text(&rng), text(&rng), text(&rng))
                        sub += [entry("username", .scalar(keystone.username!)), entry("password", .scalar(keystone.password!)), entry("project", .scalar(keystone.project!))]
                    } else {
                        (keystone.applicationCredentialID, keystone.applicationCredentialSecret) = (text(&rng), text(&rng))
                        sub += [entry("application_credential_id", .scalar(keystone.applicationCredentialID!)), entry("application_credential_secret", .scalar(keystone.applicationCredentialSecret!))]
                    }
                    if rng.chance(0.3) {
                        keystone.userDomain = text(&rng)
                        sub.append(entry("user_domain", .scalar(keystone.userDomain)))
                    }
                    if rng.chance(0.3) {
                        keystone.projectDomain = text(&rng)
                        sub.append(entry("project_domain", .scalar(keystone.projectDomain)))
                    }
                    if rng.chance(0.3) {
                        keystone.interface = rng.pick(["public", "internal", "admin"])
                        sub.append(entry("interface", .scalar(keystone.interface)))
                    }
                    if rng.chance(0.3) {
                        keystone.region = text(&rng)
                        sub.append(entry("region", .scalar(keystone.region!)))
                    }
                    fields.append(entry("keystone", .map(sub.shuffled(using: &rng))))
                    cloud.keystone = keystone
                }
                if fields.isEmpty { fields.append(entry("owner", .scalar(cloud.owner))) }
                items.append(.map(fields.shuffled(using: &rng)))
                out.expected.clouds.append(cloud)
            }
            if !items.isEmpty { entries.append(entry("clouds", .list(items))) }
        }
        out.entries = entries.shuffled(using: &rng)
        return out
    }

    /// Puts one mistake into the configuration; returns the entry it is on.
    static func injectMistake(_ config: inout GeneratedConfiguration, rng: inout FuzzRNG) -> (entryID: Int, what: String)? {
        let badValues: [String: [String]] = [
            "listen": ["nohost", "host:99999", "[::1]9494", ":80", "host:port"], "log_level": ["loud", "informational"],
            "upload_mode": ["write-around", "Write-Back"], "max_upload_size": ["12XB", "-1", "1.5.5GB", "GiB", "nan GB", "1e30"],
            "size": ["12XB", "-5MB", "infGiB"], "min_free_disk": ["lots"], "high_watermark": ["150%", "0", "abc", "-0.5", "nan"],
            "low_watermark": ["0%", "2"], "decision_ttl": ["5 parsecs", "-1s", "1e20s", "s"], "offline_grace": ["forever"],
            "concurrency": ["0", "-3", "many", "1.5"], "initial_backoff": ["soon"], "max_backoff": ["-5m"], "insecure": ["maybe", "1"],
            "max_connections": ["0", "lots"], "header_timeout": ["0s", "0"], "idle_timeout": ["0ms"], "max_fills": ["-1"],
        ]
        // Collect the entries a mistake can go on: (path to the entry, key).
        var targets: [(path: [Int], key: String, isMap: Bool)] = []
        func walk(_ entries: [YEntry], path: [Int]) {
            for (index, entry) in entries.enumerated() {
                if case .scalar = entry.value, badValues[entry.key] != nil { targets.append((path + [index], entry.key, false)) }
                if case let .map(children) = entry.value {
                    targets.append((path + [index], entry.key, true))
                    walk(children, path: path + [index])
                }
                if case let .list(items) = entry.value {
                    for (itemIndex, item) in items.enumerated() {
                        if case let .map(children) = item { walk(children, path: path + [index, -1 - itemIndex]) }
                    }
                }
            }
        }
        walk(config.entries, path: [])
        let unknownID = YAMLTreeGenerator.newID()
        if targets.isEmpty || rng.chance(0.3) {
            config.entries.insert(YEntry(key: rng.pick(["colour", "cache_size", "listen_port", "Listen"]), value: .scalar("x"), id: unknownID), at: rng.below(config.entries.count + 1))
            return (unknownID, "an unknown top-level key")
        }
        let target = rng.pick(targets)
        var found: (Int, String)?
        func edit(_ entries: inout [YEntry], _ path: ArraySlice<Int>) {
            let index = path.first!
            if path.count == 1 {
                if target.isMap {
                    if case var .map(children) = entries[index].value {
                        children.insert(YEntry(key: "unknown_key", value: .scalar("1"), id: unknownID), at: rng.below(children.count + 1))
                        entries[index].value = .map(children)
                        found = (unknownID, "an unknown key under \(target.key)")
                    }
                } else {
                    entries[index].value = .scalar(rng.pick(badValues[target.key]!))
                    found = (entries[index].id, "a bad \(target.key)")
                }
                return
            }
            let next = path.dropFirst()
            if next.first! < 0 {
                let itemIndex = -1 - next.first!
                if case var .list(items) = entries[index].value, case var .map(children) = items[itemIndex] {
                    edit(&children, next.dropFirst())
                    items[itemIndex] = .map(children)
                    entries[index].value = .list(items)
                }
            } else if case var .map(children) = entries[index].value {
                edit(&children, next)
                entries[index].value = .map(children)
            }
        }
        edit(&config.entries, target.path[...])
        return found
    }
}
