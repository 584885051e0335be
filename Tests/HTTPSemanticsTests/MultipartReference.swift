import Foundation

@testable import HTTPSemantics

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
