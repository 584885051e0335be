import DepotTestSupport
import PropertyBased

@testable import DepotConfig

/// One input of the tree round trip: a tree and the stream its rendering style is drawn
/// from, so a smaller tree is written in the same style.
struct YAMLTreeInput: Sendable, CustomStringConvertible {
    var tree: YTree
    var style: Xoshiro

    static func generate(_ rng: inout some RandomNumberGenerator) -> YAMLTreeInput {
        YAMLTreeInput(tree: YAMLTreeGenerator.document(&rng), style: Xoshiro(seed: (rng.next(), rng.next(), rng.next(), rng.next() | 1)))
    }

    static func shrink(_ input: YAMLTreeInput) -> some Sequence<YAMLTreeInput> & SendableMetatype {
        input.tree.smaller.lazy.map { YAMLTreeInput(tree: $0, style: input.style) }
    }

    /// The text and the line each map entry (by id) is written on.
    var rendered: (text: String, lines: [Int: Int]) {
        var renderer = YAMLRenderer(rng: style)
        let text = renderer.render(tree)
        return (text, renderer.keyLines)
    }

    var description: String { fuzzQuote(rendered.text) }
}

extension YTree {
    /// Smaller trees: one map entry or list item left out anywhere (never the last one: the
    /// generator makes no empty map or list, which YAML writes as null), or a value made null.
    var smaller: [YTree] {
        switch self {
        case .scalar, .null: return []
        case let .map(entries):
            var out: [YTree] = entries.count > 1 ? entries.indices.map { index in .map(entries.enumerated().filter { $0.offset != index }.map(\.element)) } : []
            for index in entries.indices {
                for value in entries[index].value.replacements {
                    var copy = entries
                    copy[index].value = value
                    out.append(.map(copy))
                }
            }
            return out
        case let .list(items):
            var out: [YTree] = items.count > 1 ? items.indices.map { index in .list(items.enumerated().filter { $0.offset != index }.map(\.element)) } : []
            for index in items.indices {
                for value in items[index].replacements {
                    var copy = items
                    copy[index] = value
                    out.append(.list(copy))
                }
            }
            return out
        }
    }

    /// What a value inside a tree can shrink to: null, or a smaller tree of its own.
    private var replacements: [YTree] {
        if case .null = self { return [] }
        return [.null] + smaller
    }
}

/// One input of the configuration round trip: the text, the configuration it means, and the
/// mistake put into it (on which line), if any.
struct ConfigInput: Sendable, CustomStringConvertible {
    var text: String
    var expected: DepotConfiguration
    var mistake: (line: Int?, what: String)?

    static func generate(_ rng: inout some RandomNumberGenerator) -> ConfigInput {
        var generated = ConfigGenerator.configuration(&rng)
        let injected = rng.chance(0.25) ? ConfigGenerator.injectMistake(&generated, rng: &rng) : nil
        var renderer = YAMLRenderer(seed: &rng)
        let text = renderer.render(.map(generated.entries))
        return ConfigInput(text: text, expected: generated.expected, mistake: injected.map { (renderer.keyLines[$0.entryID], $0.what) })
    }

    /// nil when the text parses to the expected configuration, or its mistake is reported
    /// on the mistake's line.
    func failure() -> String? {
        do {
            let parsed = try DepotConfiguration.parse(text, path: "fuzz.yaml")
            if let mistake { return "accepted \(mistake.what)" }
            if parsed != expected { return "parsed as\n\(parsed)\nexpected\n\(expected)" }
        } catch {
            guard let mistake else { return "refused: \(error)" }
            if error.line != mistake.line {
                return "\(mistake.what) is on line \(mistake.line ?? -1), the error names line \(error.line ?? -1) (\(error))"
            }
        }
        return nil
    }

    var description: String { fuzzQuote(text) }
}

/// One input of the mutation property: a configuration or YAML tree's text, mutated, or with
/// a tab put into one line's indentation (`tabLine`).
struct MutatedConfigInput: Sendable, CustomStringConvertible {
    var text: String
    var tabLine: Int?

    static func generate(_ rng: inout some RandomNumberGenerator) -> MutatedConfigInput {
        let generated = ConfigGenerator.configuration(&rng)
        var renderer = YAMLRenderer(seed: &rng)
        let valid = rng.chance(0.7) ? renderer.render(.map(generated.entries)) : renderer.render(YAMLTreeGenerator.document(&rng))
        if rng.chance(0.2) {
            // Split on LF scalars, so a CRLF line keeps its CR.
            var lines = valid.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
            // A line with content: YAML lets a blank last line hold a tab.
            let written = lines.indices.filter { !lines[$0].allSatisfy { $0 == " " || $0 == "\r" } }
            if let index = written.isEmpty ? nil : rng.pick(written) {
                lines[index] = rng.pick(["\t", "\t  ", "\t\t"]) + lines[index]
                return MutatedConfigInput(text: lines.joined(separator: "\n"), tabLine: index + 1)
            }
        }
        return MutatedConfigInput(text: mutate(valid, rng: &rng, rounds: rng.int(1...6), interesting: ConfigGenerator.interesting), tabLine: nil)
    }

    /// Shrinks the text; a smaller text is checked for the general promises only (its tab,
    /// if it had one, may be on another line or gone).
    static func shrink(_ input: MutatedConfigInput) -> some Sequence<MutatedConfigInput> & SendableMetatype {
        FuzzShrink.removals(input.text).lazy.map { MutatedConfigInput(text: $0, tabLine: nil) }
    }

    var description: String { "\(tabLine.map { "tab on line \($0), " } ?? "")text \(fuzzQuote(text))" }
}
