import DepotTestSupport
import Foundation

@testable import DepotConfig

indirect enum YTree: Sendable {
    case scalar(String)
    case null
    case map([YEntry])
    case list([YTree])
}

struct YEntry: Sendable {
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
                // As written: a key with escapes or a doubled '' differs from its text. Compared
                // as UTF-8 bytes: a quote followed by a combining mark is one Character, which a
                // Character search for "'" would not find.
                let line = lines[entry.line - 1]
                let written = Array(line.utf8), key = Array(entry.key.utf8)
                let doubled = key.flatMap { $0 == UInt8(ascii: "'") ? [$0, $0] : [$0] }
                if !key.isEmpty && written.firstRange(of: key) == nil && !written.contains(UInt8(ascii: "\\")) && written.firstRange(of: doubled) == nil {
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

    static func key(_ rng: inout some RandomNumberGenerator) -> String {
        if rng.chance(0.1) { return rng.pick(["a: b", "x #y", "- item", "#hash", "-", "key with spaces", "k:", "日本", "🚀", "é", "a'b", "---"]) }
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-./")
        var text = String((0..<rng.int(1...12)).map { _ in rng.pick(alphabet) })
        if text.hasPrefix("-") { text = "k" + text }
        return text
    }

    static func scalar(_ rng: inout some RandomNumberGenerator) -> String {
        let pieces = [
            "a", "b", "z", "Q", "0", "7", " ", "-", "_", ".", "/", ":", "#", "'", "\"", "\\", "é", "ß", "日本", "🚀", "Ω", "\t", "!", "%", "@", "[", "]",
            "{", "}", ",", "&", "*", "|", ">", "~", "=", "?", " #", ": ", "word", "value", "- ", "\u{00A0}",
        ]
        if rng.chance(0.02) { return "line one\nline two" }
        return (0..<rng.smallCount(max: 14)).map { _ in rng.pick(pieces) }.joined()
    }

    static func entries(_ rng: inout some RandomNumberGenerator, depth: Int, budget: inout Int) -> [YEntry] {
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

    static func value(_ rng: inout some RandomNumberGenerator, depth: Int, budget: inout Int) -> YTree {
        let nest = budget > 0 && depth < 60
        switch rng.below(nest ? 10 : 6) {
        case 0..<5: return .scalar(scalar(&rng))
        case 5: return .null
        case 6..<8: return .map(entries(&rng, depth: depth + 1, budget: &budget))
        default: return .list(items(&rng, depth: depth + 1, budget: &budget))
        }
    }

    static func items(_ rng: inout some RandomNumberGenerator, depth: Int, budget: inout Int) -> [YTree] {
        (0..<rng.int(1...(depth > 6 ? 2 : 5))).map { _ in
            budget -= 1
            return value(&rng, depth: depth, budget: &budget)
        }
    }

    static func document(_ rng: inout some RandomNumberGenerator) -> YTree {
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
