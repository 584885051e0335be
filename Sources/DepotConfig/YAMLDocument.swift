import Foundation
import Yams

/// A config file's YAML, reduced to what the configuration reads: maps whose keys carry the
/// line they are on, lists, text values and nulls. Parsed by Yams (libyaml), so all of YAML
/// 1.1 works: flow collections, anchors and aliases, `<<` merge keys, block scalars, quoting.
public indirect enum YAMLValue: Equatable, Sendable {
    /// A scalar's text as written (after unquoting): typed by the key that reads it.
    case scalar(String)
    case map([(key: String, value: YAMLValue, line: Int)])
    case list([YAMLValue])
    /// An empty value, `~` or `null` (plain, not quoted).
    case null

    public static func == (a: YAMLValue, b: YAMLValue) -> Bool {
        switch (a, b) {
        case let (.scalar(x), .scalar(y)): x == y
        case let (.list(x), .list(y)): x == y
        case (.null, .null): true
        case let (.map(x), .map(y)): x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: false
        }
    }

    /// The value of `key` in a map.
    public subscript(key: String) -> YAMLValue? {
        if case let .map(entries) = self { return entries.first { $0.key == key }?.value }
        return nil
    }

    /// Parses one YAML document; an empty one is `.null`.
    ///
    /// - Throws: `YAMLError` with the line (from libyaml's mark) and what to change.
    public static func parse(_ text: String) throws(YAMLError) -> YAMLValue {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw YAMLError(error, in: text) }
        guard let root else { return .null }
        var budget = maximumNodes
        return try value(of: root, budget: &budget)
    }

    /// Aliases share nodes that this tree copies: a few lines of nested aliases could ask for
    /// billions of copies ("billion laughs"). No real config comes near this.
    static let maximumNodes = 100_000

    static func value(of node: Node, budget: inout Int) throws(YAMLError) -> YAMLValue {
        budget -= 1
        guard budget >= 0 else {
            throw YAMLError(line: node.mark?.line ?? 1, message: "more than \(maximumNodes) values once aliases are expanded; write the file out plainly")
        }
        switch node {
        case let .scalar(scalar):
            return scalar.style == .plain && node.tag == Tag(.null) ? .null : .scalar(scalar.string)
        case let .sequence(sequence):
            var items: [YAMLValue] = []
            for item in sequence { items.append(try value(of: item, budget: &budget)) }
            return .list(items)
        case let .mapping(mapping):
            return .map(try entries(of: mapping, budget: &budget))
        case let .alias(alias):
            // compose() substitutes the anchored node for each alias; an alias node left over is
            // one it could not resolve.
            throw YAMLError(line: alias.mark?.line ?? 1, message: "alias *\(alias.anchor.rawValue) names no anchor (&\(alias.anchor.rawValue)) above it")
        }
    }

    /// A map's entries in file order; `<<: *anchor` (or a list of them) merges the anchored
    /// maps' entries that the map does not set itself (YAML 1.1 merge keys).
    static func entries(of mapping: Node.Mapping, budget: inout Int) throws(YAMLError) -> [(key: String, value: YAMLValue, line: Int)] {
        var own: [(key: String, value: YAMLValue, line: Int)] = []
        var merged: [(key: String, value: YAMLValue, line: Int)] = []
        for (key, value) in mapping {
            let line = key.mark?.line ?? 1
            guard case let .scalar(name) = key else {
                throw YAMLError(line: line, message: "a key must be a name, not a list or a map")
            }
            if name.style == .plain && key.tag == Tag(.merge) {
                let sources: [Node] = value.sequence.map { Array($0) } ?? [value]
                for source in sources {
                    guard let sourceMap = source.mapping else {
                        throw YAMLError(line: line, message: "<< merges maps: give it *anchor of a map, or a list of them")
                    }
                    // Each merged key keeps the line it is written on: a mistake in it is fixed there.
                    merged += try entries(of: sourceMap, budget: &budget)
                }
            } else {
                own.append((name.string, try self.value(of: value, budget: &budget), line))
            }
        }
        var seen = Set(own.map(\.key))
        for entry in merged where seen.insert(entry.key).inserted { own.append(entry) }
        return own
    }
}

/// A YAML syntax error, with the line it is on.
public struct YAMLError: Error, Equatable, CustomStringConvertible {
    public let line: Int
    public let message: String
    public var description: String { "line \(line): \(message)" }

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    /// Yams' error, with libyaml's wording and a hint for the usual mistakes.
    init(_ error: any Error, in text: String) {
        guard let error = error as? YamlError else {
            self.init(line: 1, message: "\(error)")
            return
        }
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            let during = context.map { " (\($0.text) on line \($0.mark.line))" } ?? ""
            // At the end of the text libyaml starts a line of its own past the last one: the
            // mistake is on the line it was reading then, or the last.
            let lines = text.split(omittingEmptySubsequences: false, whereSeparator: Self.isLineBreak).count
            let line = mark.line <= lines ? mark.line : min(context?.mark.line ?? lines, lines)
            self.init(line: line, message: problem + during + Self.hint(line: line, of: text))
        case let .duplicatedKeysInMapping(duplicates, context):
            self.init(line: context.mark.line, message: "key \(duplicates.joined(separator: ", ")) appears twice in one map; keep one")
        case let .reader(problem, offset, _, _):
            self.init(line: offset.map { Self.line(atCharacter: $0, of: text) } ?? 1, message: problem + "; save the file as UTF-8 text")
        default:
            self.init(line: 1, message: "\(error)")
        }
    }

    /// YAML forbids tabs in indentation; libyaml's own words for it do not say so.
    static func hint(line: Int, of text: String) -> String {
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: isLineBreak)
        guard line >= 1, line <= lines.count else { return "" }
        return lines[line - 1].prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") ? "; indent with spaces, not tabs" : ""
    }

    static func line(atCharacter offset: Int, of text: String) -> Int {
        1 + text.prefix(offset).reduce(0) { $0 + (isLineBreak($1) ? 1 : 0) }
    }

    /// The line breaks libyaml counts lines by (YAML 1.1 section 5.4).
    static func isLineBreak(_ c: Character) -> Bool {
        c == "\n" || c == "\r" || c == "\r\n" || c == "\u{85}" || c == "\u{2028}" || c == "\u{2029}"
    }
}
