import BlobStore
import Cache
import DepotTestSupport
import Eviction
import Foundation
import Glance
import HTTPCore
import NIOCore
import NIOHTTP1
import Testing

@testable import Proxy

/// The same request for an image's data gets the same answer on every serving path: a hit on
/// the event loop (answered from the request's bytes, as the connection's last request repeated
/// for another range, and through NIO's HTTP codec), a hit from a task, a fill, a stream
/// without a copy, and TLS. Status, header fields (but `x-depot-cache`, `x-depot-request-id` and `date`) and bytes must be identical,
/// and must be what RFC 9110 asks for (checked against expectations written from the RFC, not
/// from Depot's output).
@Suite(.serialized) struct OneAnswerTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func everyServingPathGivesTheSameAnswerToEveryRequest() async throws {
        let bytes = pseudoRandomBytes(count: 10_000, seed: 131)
        let full = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let empty = try await uploadImage(glanceAsAlice(glance.url), [])
        #expect(empty.size == 0 && empty.isActive)

        var lasting = CacheSettings.testing
        lasting.decisionTTL = .seconds(3600)
        try await withDepot(glanceURL: glance.url, settings: lasting) { warm in
            try await withDepot(glanceURL: glance.url, settings: lasting) { cold in
                var tiny = lasting
                tiny.budget = Watermarks(budget: 4096, high: 0.95, low: 0.85)
                try await withDepot(glanceURL: glance.url, settings: tiny) { bypass in
                    let certificates = try await TestCertificates()
                    let data = TemporaryDirectory("depot-one-answer-tls")
                    let tls = try await DepotProcess.start([
                        "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
                        "--tls-certificate", certificates.serverCertificate, "--tls-key", certificates.serverKey, "--log-level", "warning",
                        "--admin-token", DepotHarness.adminToken,
                    ])
                    let client = try await WireClient(authority: certificates.authority)
                    // A PUT leaves its connection to the codec: setting up has its own client.
                    let setupClient = try await WireClient(authority: certificates.authority)
                    // Its connections stay with NIO's HTTP codec: hits answered by the codec's fast path.
                    let codecClient = try await WireClient(splitFirstHead: true)
                    // Heads the wire fast path leaves to the codec (a field ending in whitespace)
                    // leave their whole connection there: they get one of their own.
                    let oddClient = try await WireClient()
                    // Each request right after one that differs only in its range (or, without
                    // one, after itself): answered as that one repeated (`RepeatedHead`).
                    let repeatClient = try await WireClient()
                    defer { Task { await tls.stop() } }
                    let handler = DepotHandler(cache: warm.cache)
                    var compared = 0
                    var differences: [String] = []
                    for (image, content) in [(full, bytes), (empty, [UInt8]())] {
                        let path = "/v2/images/\(image.id)/file"
                        // Both images cached where hits are served (an empty image through a prefetch).
                        for base in [warm.url, "https://127.0.0.1:\(tls.port)"] {
                            _ = try await setupClient.exchange("GET", base + path, headers: [("X-Auth-Token", GlanceServer.alice)])
                            if content.isEmpty { _ = try await setupClient.exchange("PUT", base + "/v2/cache/\(image.id)", headers: [("X-Auth-Token", DepotHarness.adminToken)]) }
                        }
                        try await waitUntilCached(warm, image.id)
                        let etag = "\"\(image.osHashValue!)\""
                        for request in RequestSpace.all(etag: etag) {
                            let headers = [("X-Auth-Token", GlanceServer.alice)] + request.headers
                            let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: path, headers: HTTPHeaders(headers))
                            var memo = FastPathMemo()
                            let immediate = handler.immediateResponse(to: head, allocator: ByteBufferAllocator(), memo: &memo)
                            #expect(immediate != nil, "the event loop answers \(request)")
                            immediate?.response.release()
                            immediate?.completion()
                            var answers: [(String, WireClient.Exchange)] = []
                            let wireAnswers = warm.server.wireFastPathAnswers
                            let wireReadable = request.headers.allSatisfy { !$0.1.hasSuffix(" ") && !$0.1.hasSuffix("\t") }
                            answers.append(("event-loop hit", try await (wireReadable ? client : oddClient).exchange(request.method, warm.url + path, headers: headers)))
                            #expect(warm.server.wireFastPathAnswers == wireAnswers + (wireReadable ? 1 : 0), "answered from the request's bytes: \(request)")
                            answers.append(("codec hit", try await codecClient.exchange(request.method, warm.url + path, headers: headers)))
                            #expect(warm.server.wireFastPathAnswers == wireAnswers + (wireReadable ? 1 : 0), "answered through the HTTP codec: \(request)")
                            if wireReadable {
                                var primer = headers
                                if let at = primer.firstIndex(where: { $0.0.lowercased() == "range" }) {
                                    primer[at].1 = primer[at].1 == "bytes=0-0" ? "bytes=1-1" : "bytes=0-0"
                                }
                                _ = try await repeatClient.exchange(request.method, warm.url + path, headers: primer)
                                let repeated = warm.server.repeatedHeadAnswers
                                answers.append(("repeated event-loop hit", try await repeatClient.exchange(request.method, warm.url + path, headers: headers)))
                                #expect(warm.server.repeatedHeadAnswers == repeated + 1, "answered as the connection's last request repeated: \(request)")
                            }
                            // A token with no decision yet takes the async path; Glance ignores the extra role.
                            let fresh = GlanceServer.alice + ",probe\(compared)"
                            answers.append(("task hit", try await (wireReadable ? client : oddClient).exchange(request.method, warm.url + path, headers: [("X-Auth-Token", fresh)] + request.headers)))
                            try await makeCold(cold, image.id)
                            answers.append(("fill", try await client.exchange(request.method, cold.url + path, headers: headers)))
                            answers.append(("no copy", try await client.exchange(request.method, bypass.url + path, headers: headers)))
                            answers.append(("tls hit", try await client.exchange(request.method, "https://127.0.0.1:\(tls.port)" + path, headers: headers)))
                            let reference = answers[0].1
                            if let problem = RFC9110Expectation.check(reference, request: request, content: content, etag: etag) {
                                differences.append("\(request) on a \(content.count)-byte image: \(problem)")
                            }
                            for (name, answer) in answers.dropFirst() where normalized(answer) != normalized(reference) {
                                differences.append("\(request) on a \(content.count)-byte image: \(name) differs from the event-loop hit:\n  \(describe(answer))\n  \(describe(reference))")
                            }
                            for (name, answer) in answers where answer.error != nil { differences.append("\(request): \(name) failed: \(answer.error!)") }
                            #expect(answers[0].1.header("x-depot-cache") == "hit" && answers[1].1.header("x-depot-cache") == "hit")
                            compared += 1
                        }
                    }
                    print("one answer on every path: \(compared) requests × 6 paths compared (7 for those read from the wire), \(differences.count) differences; \(warm.server.repeatedHeadAnswers) answered as their connection's last request repeated")
                    #expect(compared == 2 * RequestSpace.all(etag: "\"x\"").count)
                    #expect(differences.isEmpty, "\(differences.prefix(20).joined(separator: "\n"))")
                }
            }
        }
    }

    /// No blob and no running fill for the image, so its next request is a miss.
    func makeCold(_ depot: DepotHarness, _ imageID: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while depot.cache.runningFill(cloud: "default_RegionOne", imageID: imageID) != nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(2))
        }
        if let digest = try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: imageID) { try await depot.cache.evict(digest) }
    }

    func waitUntilCached(_ depot: DepotHarness, _ imageID: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: imageID) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func normalized(_ answer: WireClient.Exchange) -> WireClient.Exchange {
        var answer = answer
        answer.headers.removeAll { ["x-depot-cache", "x-depot-request-id", "date"].contains($0.name) }
        return answer
    }

    func describe(_ answer: WireClient.Exchange) -> String {
        "\(answer.status) [\(answer.headers.map(\.description).joined(separator: "; "))] \(answer.body.count) bytes\(answer.error.map { " error \($0)" } ?? "")"
    }
}

/// One request of the space: method, `Range`, `If-Range`, `If-None-Match`, `If-Match`.
struct RangeCase: CustomStringConvertible {
    var method: String
    var range: RangeForm?
    var ifRange: String?
    var ifNoneMatch: String?
    var ifMatch: String?

    var headers: [(String, String)] {
        var headers: [(String, String)] = []
        if let range { headers.append(("Range", range.header)) }
        if let ifRange { headers.append(("If-Range", ifRange)) }
        if let ifNoneMatch { headers.append(("If-None-Match", ifNoneMatch)) }
        if let ifMatch { headers.append(("If-Match", ifMatch)) }
        return headers
    }

    var description: String {
        "\(method) Range: \(range?.header ?? "-") If-Range: \(ifRange ?? "-") If-None-Match: \(ifNoneMatch ?? "-") If-Match: \(ifMatch ?? "-")"
    }
}

/// A `Range` field and what RFC 9110 section 14 makes of it for a 10 000-byte and an empty
/// representation (with Depot's documented choices where the RFC leaves one: a number of more
/// than 19 digits and a satisfiable suffix of an empty body are ignored; overlapping ranges
/// are coalesced, 14.3).
struct RangeForm {
    enum Outcome: Equatable { case whole, ranges([ClosedRange<Int>]), unsatisfiable }
    var header: String
    var full: Outcome
    var empty: Outcome
}

enum RequestSpace {
    static let forms: [RangeForm] = [
        RangeForm(header: "bytes=0-99", full: .ranges([0...99]), empty: .unsatisfiable),
        RangeForm(header: "bytes=-100", full: .ranges([9900...9999]), empty: .whole),
        RangeForm(header: "bytes=9000-", full: .ranges([9000...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-", full: .ranges([0...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9999", full: .ranges([0...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=9999-9999", full: .ranges([9999...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-0", full: .ranges([0...0]), empty: .unsatisfiable),
        RangeForm(header: "bytes=-10000", full: .ranges([0...9999]), empty: .whole),
        RangeForm(header: "bytes=-20000", full: .ranges([0...9999]), empty: .whole),
        RangeForm(header: "bytes=5000-20000", full: .ranges([5000...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9,20-29", full: .ranges([0...9, 20...29]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9,5-14", full: .ranges([0...14]), empty: .unsatisfiable),
        RangeForm(header: "bytes=20-29,0-9,25-40", full: .ranges([0...9, 20...40]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9,9990-9999", full: .ranges([0...9, 9990...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9,-5", full: .ranges([0...9, 9995...9999]), empty: .whole),
        RangeForm(header: "bytes=1-2,3-4", full: .ranges([1...4]), empty: .unsatisfiable),
        RangeForm(header: "bytes=100-50", full: .unsatisfiable, empty: .unsatisfiable),
        RangeForm(header: "bytes=10000-", full: .unsatisfiable, empty: .unsatisfiable),
        RangeForm(header: "bytes=99999-100000", full: .unsatisfiable, empty: .unsatisfiable),
        RangeForm(header: "bytes=-0", full: .unsatisfiable, empty: .unsatisfiable),
        RangeForm(header: "bytes=9999999999999999999-", full: .unsatisfiable, empty: .unsatisfiable),
        RangeForm(header: "bytes=0-9999999999999999999", full: .ranges([0...9999]), empty: .unsatisfiable),
        RangeForm(header: "bytes=99999999999999999999-", full: .whole, empty: .whole),
        RangeForm(header: "bytes=abc", full: .whole, empty: .whole),
        RangeForm(header: "items=0-5", full: .whole, empty: .whole),
        RangeForm(header: "bytes= 1-2 , 7-8 ", full: .ranges([1...2, 7...8]), empty: .unsatisfiable),
        RangeForm(header: "bytes=" + (0..<33).map { "\($0 * 10)-\($0 * 10 + 1)" }.joined(separator: ","), full: .whole, empty: .whole),
    ]

    /// Every range form (and none) × every `If-Range` form, and × every `If-None-Match` form,
    /// for GET and HEAD; and a few range forms × every `If-Match` form, alone and with an
    /// `If-None-Match` that matches.
    static func all(etag: String) -> [RangeCase] {
        let ifRanges: [String?] = [nil, etag, "W/" + etag, "\"other\"", "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"]
        let noneMatches: [String] = [etag, "W/" + etag, "\"a\", " + etag, "*", "\"other\""]
        let matches: [String] = [etag, "W/" + etag, "\"a\", " + etag, "*", "\"other\""]
        var cases: [RangeCase] = []
        for method in ["GET", "HEAD"] {
            for range in [nil] + forms.map(Optional.some) {
                for ifRange in ifRanges { cases.append(RangeCase(method: method, range: range, ifRange: ifRange)) }
                for ifNoneMatch in noneMatches { cases.append(RangeCase(method: method, range: range, ifNoneMatch: ifNoneMatch)) }
            }
            for range in [nil] + forms.prefix(3).map(Optional.some) + [forms[16]] {
                for ifMatch in matches {
                    cases.append(RangeCase(method: method, range: range, ifMatch: ifMatch))
                    cases.append(RangeCase(method: method, range: range, ifNoneMatch: etag, ifMatch: ifMatch))
                }
            }
        }
        return cases
    }
}

/// What RFC 9110 asks of an answer, from the request alone.
enum RFC9110Expectation {
    /// nil when the answer is what the RFC asks for; else what is wrong.
    static func check(_ answer: WireClient.Exchange, request: RangeCase, content: [UInt8], etag: String) -> String? {
        let size = content.count
        // 13.1.1, first in 13.2.2's order: "*" or a listed tag by strong comparison lets the
        // request go on; anything else is 412.
        if let ifMatch = request.ifMatch {
            let tags = ifMatch.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if !tags.contains("*") && !tags.contains(etag) {
                guard answer.status == 412, answer.header("content-md5") == nil else { return "expected 412, got \(answer.status)" }
                return nil
            }
        }
        // 13.1.2: "*" or any listed tag, by weak comparison, is a match: 304 for GET and HEAD.
        if let inm = request.ifNoneMatch {
            let tags = inm.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if tags.contains("*") || tags.contains(where: { $0.replacingOccurrences(of: "W/", with: "") == etag }) {
                guard answer.status == 304, answer.body.isEmpty, answer.header("etag") == etag else { return "expected 304 with the ETag, got \(answer.status)" }
                return nil
            }
        }
        var outcome = size == 0 ? request.range?.empty ?? .whole : request.range?.full ?? .whole
        // 14.2: Range is defined for GET only. 13.1.5: If-Range needs a strong match.
        if request.method == "HEAD" || (request.ifRange != nil && request.ifRange != etag) { outcome = .whole }
        let isHead = request.method == "HEAD"
        switch outcome {
        case .whole:
            guard answer.status == 200, answer.header("content-length") == String(size), answer.header("content-range") == nil,
                  answer.body == (isHead ? [] : content)
            else { return "expected 200 with all \(size) bytes, got \(answer.status) with \(answer.body.count)" }
        case .unsatisfiable:
            guard answer.status == 416, answer.header("content-range") == "bytes */\(size)" else { return "expected 416, got \(answer.status)" }
        case let .ranges(list) where list.count == 1:
            let range = list[0]
            guard answer.status == 206, answer.header("content-range") == "bytes \(range.lowerBound)-\(range.upperBound)/\(size)",
                  answer.header("content-length") == String(range.count), answer.body == Array(content[range])
            else { return "expected 206 of \(range), got \(answer.status) \(answer.header("content-range") ?? "-")" }
        case let .ranges(list):
            guard answer.status == 206, let type = answer.header("content-type"), type.hasPrefix("multipart/byteranges; boundary="),
                  answer.header("content-length") == String(answer.body.count)
            else { return "expected a multipart 206, got \(answer.status) \(answer.header("content-type") ?? "-")" }
            let boundary = String(type.dropFirst("multipart/byteranges; boundary=".count))
            var expected: [UInt8] = []
            for range in list {
                expected += Array("\r\n--\(boundary)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(range.lowerBound)-\(range.upperBound)/\(size)\r\n\r\n".utf8)
                expected += content[range]
            }
            expected += Array("\r\n--\(boundary)--\r\n".utf8)
            guard answer.body == expected else { return "the multipart body is not the parts \(list)" }
        }
        return nil
    }
}
