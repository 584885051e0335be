@testable import HTTPSemantics

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
