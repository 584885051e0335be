import Foundation

/// A value of the YAML subset Depot's configuration uses: block maps, block lists, and
/// scalars (plain, 'single' or "double" quoted). No anchors, tags, flow collections or
/// multi-line scalars: a config file that needs them is a config file that should be simpler.
public indirect enum YAMLValue: Equatable, Sendable {
    case scalar(String)
    case map([(key: String, value: YAMLValue, line: Int)])
    case list([YAMLValue])
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
}

/// A syntax error, with the line it is on.
public struct YAMLError: Error, Equatable, CustomStringConvertible {
    public let line: Int
    public let message: String
    public var description: String { "line \(line): \(message)" }
}

/// Parses the YAML subset described at `YAMLValue`.
public enum YAMLSubset {
    struct Line {
        let number: Int
        let indent: Int
        let text: Substring
    }

    public static func parse(_ text: String) throws(YAMLError) -> YAMLValue {
        var lines: [Line] = []
        // "\r\n" is one Character: splitting on "\n" alone would keep a CRLF file on one line.
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let line = raw.last == "\r" ? raw.dropLast() : raw
            if line.contains("\t") && line.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") {
                throw YAMLError(line: index + 1, message: "indent with spaces, not tabs")
            }
            let content = stripComment(line)
            let trimmed = content.drop { $0 == " " }
            if trimmed.allSatisfy({ $0 == " " }) { continue }
            if trimmed == "---" && lines.isEmpty { continue }
            lines.append(Line(number: index + 1, indent: content.count - trimmed.count, text: Substring(trimmed.reversed().drop { $0 == " " }.reversed())))
        }
        guard let first = lines.first else { return .null }
        var position = 0
        let value = try parseBlock(lines, &position, indent: first.indent)
        if position < lines.count {
            throw YAMLError(line: lines[position].number, message: "unexpected indentation")
        }
        return value
    }

    /// Removes a `#` comment that starts the line or follows a space, outside quotes.
    static func stripComment(_ line: Substring) -> Substring {
        var quote: Character?
        var escaped = false
        var previous: Character = " "
        for index in line.indices {
            let c = line[index]
            if let q = quote {
                // A "double-quoted" value escapes with a backslash ('' in a single-quoted one
                // closes and reopens, which comes to the same).
                if escaped {
                    escaped = false
                } else if q == "\"" && c == "\\" {
                    escaped = true
                } else if c == q {
                    quote = nil
                }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "#" && (previous == " " || index == line.startIndex) {
                return line[..<index]
            }
            previous = c
        }
        return line
    }

    static func parseBlock(_ lines: [Line], _ position: inout Int, indent: Int) throws(YAMLError) -> YAMLValue {
        let line = lines[position]
        if line.text.hasPrefix("- ") || line.text == "-" {
            return try parseList(lines, &position, indent: indent)
        }
        return try parseMap(lines, &position, indent: indent)
    }

    /// - Parameter atKeyIndentation: the list sits at its key's indentation, so a line there
    ///   that is not an item is the map's next key.
    static func parseList(_ lines: [Line], _ position: inout Int, indent: Int, atKeyIndentation: Bool = false) throws(YAMLError) -> YAMLValue {
        var items: [YAMLValue] = []
        while position < lines.count, lines[position].indent == indent {
            let line = lines[position]
            guard line.text.hasPrefix("- ") || line.text == "-" else {
                if atKeyIndentation { break }
                throw YAMLError(line: line.number, message: "expected a list item (- ...) like the lines above")
            }
            let rest = line.text.dropFirst(1).drop { $0 == " " }
            if rest.isEmpty {
                position += 1
                if position < lines.count, lines[position].indent > indent {
                    items.append(try parseBlock(lines, &position, indent: lines[position].indent))
                } else {
                    items.append(.null)
                }
            } else if splitKey(rest) != nil {
                // "- key: value" starts a map whose further keys are indented under the key.
                let itemIndent = indent + (line.text.count - rest.count)
                var rewritten = lines
                rewritten[position] = Line(number: line.number, indent: itemIndent, text: rest)
                items.append(try parseMap(rewritten, &position, indent: itemIndent))
            } else {
                items.append(.scalar(try scalar(rest, line: line.number)))
                position += 1
            }
        }
        return .list(items)
    }

    static func parseMap(_ lines: [Line], _ position: inout Int, indent: Int) throws(YAMLError) -> YAMLValue {
        var entries: [(key: String, value: YAMLValue, line: Int)] = []
        while position < lines.count, lines[position].indent == indent {
            let line = lines[position]
            guard let (key, rest) = splitKey(line.text) else {
                throw YAMLError(line: line.number, message: "expected `key: value`")
            }
            if entries.contains(where: { $0.key == key }) {
                throw YAMLError(line: line.number, message: "key \(key) appears twice")
            }
            position += 1
            if rest.isEmpty {
                if position < lines.count, lines[position].indent > indent {
                    entries.append((key, try parseBlock(lines, &position, indent: lines[position].indent), line.number))
                } else if position < lines.count, lines[position].indent == indent, lines[position].text.hasPrefix("- ") || lines[position].text == "-" {
                    // A list may sit at its key's indentation.
                    entries.append((key, try parseList(lines, &position, indent: indent, atKeyIndentation: true), line.number))
                } else {
                    entries.append((key, .null, line.number))
                }
            } else {
                entries.append((key, .scalar(try scalar(rest, line: line.number)), line.number))
            }
        }
        if position < lines.count, lines[position].indent > indent {
            throw YAMLError(line: lines[position].number, message: "unexpected indentation")
        }
        return .map(entries)
    }

    /// Splits `key: value` (the value may be empty); nil when the text is not a key.
    static func splitKey(_ text: Substring) -> (String, Substring)? {
        var quote: Character?
        var skipNext = false
        for index in text.indices {
            let c = text[index]
            if skipNext {
                skipNext = false
                continue
            }
            if let q = quote {
                // Escapes inside quotes: \" in double quotes, '' in single quotes.
                let next = text.index(after: index)
                if q == "\"" && c == "\\" || q == "'" && c == "'" && next < text.endIndex && text[next] == "'" {
                    skipNext = true
                } else if c == q {
                    quote = nil
                }
                continue
            }
            if c == "\"" || c == "'" {
                if index == text.startIndex { quote = c }
                continue
            }
            if c == ":" {
                let after = text.index(after: index)
                if after == text.endIndex || text[after] == " " {
                    var key = String(text[..<index])
                    if key.count >= 2, let f = key.first, f == "\"" || f == "'", key.last == f { key = String(key.dropFirst().dropLast()) }
                    guard !key.isEmpty else { return nil }
                    return (key, text[after...].drop { $0 == " " })
                }
            }
        }
        return nil
    }

    static func scalar(_ text: Substring, line: Int) throws(YAMLError) -> String {
        guard let first = text.first else { return "" }
        if first == "'" {
            guard text.count >= 2, text.last == "'" else { throw YAMLError(line: line, message: "unterminated 'quoted' value") }
            return String(text.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'")
        }
        if first == "\"" {
            guard text.count >= 2, text.last == "\"" else { throw YAMLError(line: line, message: "unterminated \"quoted\" value") }
            var out = ""
            var escaping = false
            for c in text.dropFirst().dropLast() {
                if escaping {
                    switch c {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\\": out.append("\\")
                    case "\"": out.append("\"")
                    default: throw YAMLError(line: line, message: "unsupported escape \\\(c)")
                    }
                    escaping = false
                } else if c == "\\" {
                    escaping = true
                } else {
                    out.append(c)
                }
            }
            if escaping { throw YAMLError(line: line, message: "value ends in a lone backslash") }
            return out
        }
        if first == "{" || first == "[" || first == "&" || first == "*" || first == "!" || first == "|" || first == ">" {
            if text == "[]" || text == "{}" { return "" }
            throw YAMLError(line: line, message: "flow collections, anchors, tags and block scalars are not supported; quote the value")
        }
        return String(text)
    }
}
