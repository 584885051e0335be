import Foundation
import Glance
import HTTPCore
import HTTPSemantics
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Proxy

/// A hit's head written in wire form, against NIO's `HTTPResponseEncoder` given the same head
/// as a model: the fast path's bytes must be the codec's, for every kind of plan.
@Suite struct HitResponseTests {
    static let representations = [
        Representation(size: 10_000, entityTag: "\"" + String(repeating: "ab", count: 64) + "\"", contentMD5: String(repeating: "0f", count: 16)),
        Representation(size: 10_000, entityTag: nil, contentMD5: nil),
        Representation(size: 0, entityTag: "\"0123\"", contentMD5: "d41d8cd98f00b204e9800998ecf8427e"),
        Representation(size: 1, entityTag: "\"0123\"", contentMD5: nil),
        Representation(size: UInt64.max, entityTag: nil, contentMD5: "d41d8cd98f00b204e9800998ecf8427e"),
        // Values no record makes (hex only goes in): the head's length is counted, not assumed.
        Representation(size: 7, entityTag: "\"" + String(repeating: "f", count: 4000) + "\"", contentMD5: ""),
    ]

    static let requests: [RepresentationRequest] = [
        .init(method: .get), .init(method: .head),
        .init(method: .get, range: "bytes=0-4095"), .init(method: .get, range: "bytes=5000-"), .init(method: .get, range: "bytes=-1"),
        .init(method: .get, range: "bytes=18446744073709551613-"),
        .init(method: .head, range: "bytes=0-1"),
        .init(method: .get, range: "bytes=0-1,5-9"),
        .init(method: .get, range: "bytes=20000-"),
        .init(method: .get, ifNoneMatch: "\"0123\""), .init(method: .get, ifNoneMatch: "*"),
        .init(method: .get, range: "bytes=0-1", ifRange: "\"other\""),
        .init(method: .get, range: "bytes=0-1", ifMatch: "\"other\""), .init(method: .head, ifMatch: "\"0123\""), .init(method: .get, ifMatch: "*"),
    ]

    /// What `HTTPResponseEncoder` writes for `head`.
    func encoderBytes(_ head: NIOHTTP1.HTTPResponseHead) throws -> String {
        let channel = EmbeddedChannel(handler: HTTPResponseEncoder())
        try channel.writeOutbound(HTTPServerResponsePart.head(head))
        var bytes = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            if case let .byteBuffer(buffer) = data { bytes += String(buffer: buffer) }
        }
        _ = try channel.finish()
        return bytes
    }

    @Test func onlyHexFromTheRecordGoesIntoTheHead() {
        let image = GlanceImage(properties: ["id": .string("i"), "size": .number(5), "checksum": .string("abc\r\nset-cookie: x=1")])
        #expect(Representation(image: image).contentMD5 == nil, "a checksum with a line break would be a field of its own")
        #expect(Representation(image: image).entityTag == nil)
        let good = GlanceImage(properties: ["id": .string("i"), "size": .number(5), "checksum": .string("D41D8CD98F00B204E9800998ECF8427E")])
        #expect(Representation(image: good).contentMD5 == "D41D8CD98F00B204E9800998ECF8427E", "sent as Glance sends it")
    }

    /// RFC 9110 section 5.6.7's example, 784111777 seconds after the epoch.
    static let date = HTTPDate.format(784_111_777)

    @Test func theDateIsAnIMFFixdate() {
        #expect(String(decoding: Self.date, as: UTF8.self) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(String(decoding: HTTPDate.format(0), as: UTF8.self) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(String(decoding: HTTPDate.format(951_782_400), as: UTF8.self) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(String(decoding: HTTPDate.format(4_102_444_799), as: UTF8.self) == "Thu, 31 Dec 2099 23:59:59 GMT")
        let before = time(nil)
        let now = HTTPDate.now()
        #expect(now.count == HTTPDate.count)
        #expect((before...time(nil)).contains { HTTPDate.format($0) == now }, "\(String(decoding: now, as: UTF8.self)) is now")
    }

    @Test func theWrittenHeadIsTheEncodersForEveryPlan() throws {
        var compared = 0
        var statuses: Set<Int> = []
        for representation in Self.representations {
            for request in Self.requests {
                for version in [HTTPVersion.http1_1, .http1_0] {
                    let plan = ResponsePlan(request, for: representation)
                    let status = HTTPResponseStatus(statusCode: plan.status)
                    var wire = ByteBuffer()
                    wire.writeHead(of: plan, version: version, status: status, cacheResult: "hit", date: Self.date)
                    let model = NIOHTTP1.HTTPResponseHead(version: version, status: status, headers: plan.httpHeaders(cacheResult: "hit", date: Self.date))
                    let expected = try encoderBytes(model)
                    #expect(String(buffer: wire) == expected, "\(request) of \(representation) over \(version)")
                    // With the representation's fields made once, as the fast path writes a hit.
                    var copied = ByteBuffer()
                    let fields = ByteBuffer.encodedFields(ResponsePlan.representationFields(representation))
                    copied.writeHead(of: plan, version: version, status: status, cacheResult: "hit", representationFields: fields, date: Self.date)
                    #expect(String(buffer: copied) == expected, "copied fields: \(request) of \(representation) over \(version)")
                    // The codec's path asks for the model back: it must encode to the same bytes.
                    let planned = PlannedResponse(encodedHead: wire, version: version, status: status, body: [], handle: nil, cacheResult: "hit")
                    #expect(try encoderBytes(planned.head) == expected, "decoded: \(request) of \(representation)")
                    #expect(planned.head.headers.map { "\($0.name): \($0.value)" } == model.headers.map { "\($0.name): \($0.value)" })
                    statuses.insert(plan.status)
                    compared += 1
                }
            }
        }
        #expect(compared == Self.representations.count * Self.requests.count * 2)
        #expect(statuses == [200, 206, 304, 412, 416], "every status a plan makes: \(statuses.sorted())")
    }

    /// `If-Match` (RFC 9110 section 13.1.1, evaluated first, section 13.2.2): a current tag by
    /// strong comparison, or `*`, lets the request go on to its other conditions; anything
    /// else is 412 with a JSON body, whatever `If-None-Match` and `Range` say. 412 and 416
    /// bodies are JSON, so they carry no `Content-MD5` of the image.
    @Test func ifMatchIsEvaluatedFirst() {
        let tag = "\"" + String(repeating: "ab", count: 64) + "\""
        let image = Representation(size: 10_000, entityTag: tag, contentMD5: String(repeating: "0f", count: 16))
        func plan(_ request: RepresentationRequest, _ representation: Representation = image) -> ResponsePlan { ResponsePlan(request, for: representation) }
        #expect(plan(.init(method: .get, ifMatch: tag)).status == 200)
        #expect(plan(.init(method: .get, ifMatch: "\"x\", \(tag)")).status == 200)
        #expect(plan(.init(method: .get, range: "bytes=0-9", ifMatch: "*")).status == 206)
        #expect(plan(.init(method: .get, ifNoneMatch: tag, ifMatch: tag)).status == 304)
        for failing in ["\"x\"", "W/\(tag)", "", "\(tag.dropLast())"] {
            let refused = plan(.init(method: .get, range: "bytes=0-9", ifNoneMatch: tag, ifMatch: failing))
            #expect(refused.status == 412, "If-Match: \(failing)")
            #expect(refused.headers.contains(HeaderField("content-type", "application/json")))
            #expect(!refused.headers.contains { $0.name == "content-md5" })
            #expect(refused.bodyLength > 0 && !refused.body.isEmpty)
        }
        #expect(plan(.init(method: .head, ifMatch: "\"x\"")).body.isEmpty)
        // A representation without an entity tag matches `*` only.
        let untagged = Representation(size: 10, entityTag: nil, contentMD5: nil)
        #expect(plan(.init(method: .get, ifMatch: "*"), untagged).status == 200)
        #expect(plan(.init(method: .get, ifMatch: "\"x\""), untagged).status == 412)
        #expect(!plan(.init(method: .get, range: "bytes=20000-"), image).headers.contains { $0.name == "content-md5" }, "416")
    }
}
