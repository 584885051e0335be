import DepotTestSupport
import PropertyBased

/// Writes a tree as block YAML with random style: indentation per block, quoting per
/// scalar, blank and comment lines, trailing comments and spaces, `---`, LF or CRLF.
struct YAMLRenderer {
    var rng: Xoshiro
    private(set) var lines: [String] = []
    /// The line each map entry (by id) was written on, 1-based.
    private(set) var keyLines: [Int: Int] = [:]
    private(set) var crlf = false
    private(set) var maxDepth = 0
    private var noise = 0.0

    /// A renderer with a stream of its own, seeded from `rng` (the tree and its style vary
    /// independently, and a shrunk tree keeps its style).
    init(seed rng: inout some RandomNumberGenerator) {
        self.rng = Xoshiro(seed: (rng.next(), rng.next(), rng.next(), rng.next() | 1))
    }

    init(rng: Xoshiro) { self.rng = rng }

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
