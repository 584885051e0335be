import Foundation

/// Why a `multipart/form-data` body cannot be read.
public struct MultipartError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public var description: String { message }
}

/// A streaming `multipart/form-data` parser (RFC 7578): bytes go in as they arrive, part
/// headers and part data come out, so a file part of any size passes through with bounded
/// memory.
public struct MultipartParser {
    /// What the parser found in the bytes fed so far.
    public enum Event: Equatable {
        /// A part starts; header names are lowercased.
        case partStart(headers: [String: String])
        /// Bytes of the current part's content.
        case partData([UInt8])
        case partEnd
        /// The closing delimiter: the body is complete.
        case end
    }

    private enum State { case preamble, boundaryTail, headers, content, epilogue }

    /// `\r\n--boundary`: what ends a part's content.
    private let delimiter: [UInt8]
    private var state = State.preamble
    private var buffer: [UInt8] = []
    private var start = 0

    /// The largest header block of one part.
    static let maximumHeaderBytes = 16 * 1024

    public init(boundary: String) throws(MultipartError) {
        guard !boundary.isEmpty, boundary.utf8.count <= 70 else {
            throw MultipartError(message: "the multipart boundary must be 1 to 70 characters")
        }
        delimiter = Array("\r\n--\(boundary)".utf8)
        // The first delimiter may come without the leading CRLF: pretend one was there.
        buffer = [13, 10]
    }

    /// The boundary of a `multipart/form-data` Content-Type, or nil when it is another type.
    public static func boundary(contentType: String) -> String? {
        let parts = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.first?.lowercased() == "multipart/form-data" else { return nil }
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, pair[0].lowercased() == "boundary" else { continue }
            var value = pair[1]
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            return value
        }
        return nil
    }

    /// Feeds the next bytes and returns what they completed.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(MultipartError) -> [Event] {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1 << 20 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
        var events: [Event] = []
        while try step(&events) {}
        return events
    }

    /// Checks that the body ended where a body may end.
    public func finish() throws(MultipartError) {
        guard state == .epilogue else {
            throw MultipartError(message: "the multipart body ended before its closing boundary; the upload was cut short or is malformed")
        }
    }

    /// Advances by one token; false when more bytes are needed.
    private mutating func step(_ events: inout [Event]) throws(MultipartError) -> Bool {
        switch state {
        case .preamble:
            guard let found = find(delimiter, from: start) else {
                // Keep only what could still be the start of the delimiter.
                start = max(start, buffer.count - delimiter.count)
                return false
            }
            start = found + delimiter.count
            state = .boundaryTail
            return true
        case .boundaryTail:
            return try afterDelimiter(&events)
        case .headers:
            // No headers at all (RFC 2046 allows it): the blank line comes at once.
            if buffer.count - start >= 2, buffer[start] == 13, buffer[start + 1] == 10 {
                start += 2
                state = .content
                events.append(.partStart(headers: [:]))
                return true
            }
            guard let end = find(Array("\r\n\r\n".utf8), from: start) else {
                // Too long only when the blank line could not still start in the last 3 bytes:
                // the limit must not depend on how the bytes arrive.
                if buffer.count - start - 3 > Self.maximumHeaderBytes {
                    throw MultipartError(message: "a multipart part has more than \(Self.maximumHeaderBytes) bytes of headers")
                }
                return false
            }
            guard end - start <= Self.maximumHeaderBytes else {
                throw MultipartError(message: "a multipart part has more than \(Self.maximumHeaderBytes) bytes of headers")
            }
            let text = String(decoding: buffer[start..<end], as: UTF8.self)
            var headers: [String: String] = [:]
            for line in text.split(separator: "\r\n") where !line.isEmpty {
                guard let colon = line.firstIndex(of: ":") else {
                    throw MultipartError(message: "a multipart part header has no colon: \(line.prefix(80))")
                }
                headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            start = end + 4
            state = .content
            events.append(.partStart(headers: headers))
            return true
        case .content:
            if let found = find(delimiter, from: start) {
                if found > start { events.append(.partData(Array(buffer[start..<found]))) }
                events.append(.partEnd)
                start = found + delimiter.count
                state = .boundaryTail
                return true
            }
            // Everything but a possible partial delimiter at the end is content.
            let safe = buffer.count - (delimiter.count - 1)
            if safe > start {
                events.append(.partData(Array(buffer[start..<safe])))
                start = safe
            }
            return false
        case .epilogue:
            start = buffer.count
            return false
        }
    }

    /// After a delimiter: `--` closes the body, CRLF (after optional whitespace) opens a part.
    private mutating func afterDelimiter(_ events: inout [Event]) throws(MultipartError) -> Bool {
        var index = start
        while index < buffer.count, buffer[index] == 32 || buffer[index] == 9 { index += 1 }
        guard index + 2 <= buffer.count else { return false }
        if buffer[index] == 45 && buffer[index + 1] == 45 {
            state = .epilogue
            start = buffer.count
            events.append(.end)
            return false
        }
        guard buffer[index] == 13 && buffer[index + 1] == 10 else {
            throw MultipartError(message: "a multipart boundary is followed by something other than a line break or --")
        }
        start = index + 2
        state = .headers
        return true
    }

    private func find(_ needle: [UInt8], from: Int) -> Int? {
        guard buffer.count - from >= needle.count else { return nil }
        return buffer.withUnsafeBytes { haystack in
            needle.withUnsafeBytes { pattern in
                // memchr for the first byte, memcmp for the rest: both vectorized in libc.
                let base = haystack.baseAddress!
                var offset = from
                let last = haystack.count - pattern.count
                while offset <= last {
                    guard let hit = memchr(base + offset, Int32(pattern[0]), last - offset + 1) else { return nil }
                    let position = base.distance(to: UnsafeRawPointer(hit))
                    if memcmp(base + position, pattern.baseAddress!, pattern.count) == 0 { return position }
                    offset = position + 1
                }
                return nil
            }
        }
    }
}

extension MultipartParser.Event {
    /// The `name` and `filename` of a part's Content-Disposition.
    public static func disposition(_ headers: [String: String]) -> (name: String?, filename: String?) {
        guard let value = headers["content-disposition"] else { return (nil, nil) }
        var name: String?
        var filename: String?
        for parameter in value.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { continue }
            var text = pair[1]
            if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            switch pair[0].lowercased() {
            case "name": name = text
            case "filename": filename = text
            default: break
            }
        }
        return (name, filename)
    }
}
