import DepotTestSupport
import Foundation
import Testing

@testable import HTTPSemantics

struct MultipartParserTests {
    static let boundary = "----depot-boundary-7MA4YWxk"

    static func body(file: [UInt8], fields: [(String, String)] = [("name", "cirros")], closing: Bool = true) -> [UInt8] {
        var out: [UInt8] = Array("preamble to ignore\r\n".utf8)
        for (name, value) in fields {
            out += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        out += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"disk.img\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        out += file
        out += Array("\r\n--\(boundary)".utf8)
        out += Array((closing ? "--\r\nepilogue" : "\r\n").utf8)
        return out
    }

    /// Parses `bytes` fed in pieces of `piece` bytes; returns fields, file bytes and whether it ended.
    static func parse(_ bytes: [UInt8], piece: Int) throws -> (fields: [String: String], file: [UInt8], ended: Bool) {
        var parser = try MultipartParser(boundary: boundary)
        var fields: [String: String] = [:]
        var file: [UInt8] = []
        var current: (name: String?, isFile: Bool, value: [UInt8])?
        var ended = false
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            for event in try parser.feed(bytes[offset..<end]) {
                switch event {
                case let .partStart(headers):
                    let (name, filename) = MultipartParser.Event.disposition(headers)
                    current = (name, filename != nil, [])
                case let .partData(data):
                    if current!.isFile { file += data } else { current!.value += data }
                case .partEnd:
                    if let part = current, !part.isFile, let name = part.name { fields[name] = String(decoding: part.value, as: UTF8.self) }
                    current = nil
                case .end:
                    ended = true
                }
            }
            offset = end
        }
        if ended { try parser.finish() }
        return (fields, file, ended)
    }

    @Test(arguments: [1, 2, 3, 7, 41, 42, 43, 64, 1000, 65536, 1 << 22])
    func partsComeOutWhole(piece: Int) throws {
        // Content that looks almost like a delimiter must pass through untouched.
        var file = pseudoRandomBytes(count: 200_000, seed: 3)
        let nearMiss = Array("\r\n--\(Self.boundary.dropLast())X".utf8)
        file.replaceSubrange(1000..<(1000 + nearMiss.count), with: nearMiss)
        file += Array("\r\n--".utf8)
        let parsed = try Self.parse(Self.body(file: file, fields: [("name", "cirros"), ("properties", "{\"a\": \"b\"}")]), piece: piece)
        #expect(parsed.ended)
        #expect(parsed.fields == ["name": "cirros", "properties": "{\"a\": \"b\"}"])
        #expect(parsed.file == file)
    }

    @Test func anEmptyFileIsAFile() throws {
        let parsed = try Self.parse(Self.body(file: []), piece: 5)
        #expect(parsed.file.isEmpty)
        #expect(parsed.ended)
    }

    @Test func aBodyWithoutItsClosingBoundaryIsNotComplete() throws {
        var parser = try MultipartParser(boundary: Self.boundary)
        _ = try parser.feed(Self.body(file: [1, 2, 3], closing: false))
        #expect(throws: MultipartError.self) { try parser.finish() }
    }

    @Test func malformedBodiesAreRefused() throws {
        var noColon = try MultipartParser(boundary: Self.boundary)
        #expect(throws: MultipartError.self) {
            _ = try noColon.feed(Array("--\(Self.boundary)\r\nnot a header\r\n\r\ndata".utf8))
        }
        var junkAfterBoundary = try MultipartParser(boundary: Self.boundary)
        #expect(throws: MultipartError.self) { _ = try junkAfterBoundary.feed(Array("--\(Self.boundary)XY\r\n".utf8)) }
        var hugeHeaders = try MultipartParser(boundary: Self.boundary)
        #expect(throws: MultipartError.self) {
            _ = try hugeHeaders.feed(Array("--\(Self.boundary)\r\nX: ".utf8) + [UInt8](repeating: 65, count: 20_000))
        }
        #expect(throws: MultipartError.self) { _ = try MultipartParser(boundary: "") }
    }

    @Test func boundaryComesFromTheContentType() {
        #expect(MultipartParser.boundary(contentType: "multipart/form-data; boundary=abc") == "abc")
        #expect(MultipartParser.boundary(contentType: "Multipart/Form-Data; charset=utf-8; boundary=\"a b\"") == "a b")
        #expect(MultipartParser.boundary(contentType: "application/json") == nil)
        #expect(MultipartParser.boundary(contentType: "multipart/form-data") == nil)
    }
}
