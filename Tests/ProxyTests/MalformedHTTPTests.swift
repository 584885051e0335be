import DepotTestSupport
import Foundation
import Glance
import Testing

/// Raw, malformed or unusual HTTP on the socket: every case gets an explicit status line (the
/// one RFC 9112 or RFC 9110 names), the connection is closed where RFC 9112 says it must be,
/// nothing crashes, and the server keeps serving. Silence is never an answer.
@Suite(.serialized) struct MalformedHTTPTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// Sends `bytes` on a new connection; reads the first response whole, then, with
    /// `untilClosed`, on until the server closes or `deadline` seconds pass.
    func exchange(port: Int, _ bytes: [UInt8], untilClosed: Bool, deadline: Double = 10) async throws -> (text: String, closed: Bool) {
        try await offThePool {
            let fd = try connectLoopback(port: port)
            defer { close(fd) }
            // The server may close early on a refused request.
            sendAll(fd, bytes)
            let end = ContinuousClock.now + .milliseconds(Int(deadline * 1000))
            let answer = untilClosed ? readUntilClosed(fd, deadline: end) : readOneResponse(fd, deadline: end)
            return (String(decoding: answer.bytes, as: UTF8.self), answer.closed)
        }
    }

    /// Runs `body` with a Depot that holds a 100,000-byte image of alice's in its cache, with
    /// the image's bytes and the path of its file.
    func withCachedImage(seed: UInt64, _ body: (DepotHarness, GlanceImage, [UInt8], String) async throws -> Void) async throws {
        let bytes = pseudoRandomBytes(count: 100_000, seed: seed)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try await withDepot(glanceURL: glance.url) { depot in
            let file = "/v2/images/\(image.id)/file"
            _ = try await curl(depot.url + file)
            try await waitUntil("the image is cached", timeout: .seconds(30), interval: .milliseconds(10)) {
                try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id) != nil
            }
            try await body(depot, image, bytes, file)
        }
    }

    /// The status codes of the responses in `text`, in order (pipelined responses follow
    /// each other's bodies without a line break).
    func statuses(_ text: String) -> [Int] {
        let pattern = try! NSRegularExpression(pattern: "HTTP/1\\.[01] ([0-9]{3}) ")
        return pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            Range(match.range(at: 1), in: text).flatMap { Int(text[$0]) }
        }
    }

    /// A malformed or unusual request, the answers the RFCs allow, and whether the connection
    /// must close after the answer.
    struct Case {
        let name: String
        let bytes: [UInt8]
        let allowed: Set<Int>
        let mustClose: Bool
    }

    static func cases(port: Int) -> [Case] {
        func raw(_ text: String) -> [UInt8] { Array(text.utf8) }
        let alice = "X-Auth-Token: \(GlanceServer.alice)\r\n"
        return [
            // RFC 9112 §2.2: octets that are not an HTTP message get 400 and a closed connection
            // (§3: an invalid request-line; HTTP/0.9's line without a version is one).
            Case(name: "garbage request line", bytes: raw("GARBAGE\r\n\r\n"), allowed: [400], mustClose: true),
            Case(name: "no version", bytes: raw("GET /healthz\r\n\r\n"), allowed: [400], mustClose: true),
            // RFC 9110 §15.6.6 lets a server refuse a major version with 505; or it is unparseable.
            Case(name: "bad version", bytes: raw("GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"), allowed: [400, 505], mustClose: true),
            Case(name: "header without colon", bytes: raw("GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"), allowed: [400], mustClose: true),
            Case(name: "binary in the target", bytes: [71, 69, 84, 32, 47, 0xFF, 0xFE, 0x00, 32] + raw("HTTP/1.1\r\nHost: x\r\n\r\n"), allowed: [400], mustClose: true),
            // RFC 6585 §5 names 431; a parser that gives up mid-header has no request to answer
            // but 400, and the rest of the stream cannot be resynchronized.
            Case(
                name: "huge header", bytes: raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 200_000) + "\r\n\r\n"),
                allowed: [400, 431], mustClose: true),
            // RFC 9112 §3: a target longer than the server parses MUST get 414.
            Case(name: "huge target", bytes: raw("GET /v2/images/" + String(repeating: "b", count: 20_000) + " HTTP/1.1\r\nHost: x\r\n\r\n"), allowed: [414], mustClose: false),
            // RFC 9112 §6.1: a server MAY refuse both framings, and MUST close after answering.
            Case(
                name: "content-length and chunked",
                bytes: raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"),
                allowed: [400, 401], mustClose: true),
            // RFC 9112 §6.3: an invalid Content-Length MUST get 400 and a closed connection.
            Case(name: "negative content-length", bytes: raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"), allowed: [400], mustClose: true),
            // The body's framing is broken (RFC 9112 §7.1), so the connection cannot go on; the
            // answer may be the one the head already earned (no token: 401, Glance's answer).
            Case(
                name: "bad chunk size", bytes: raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
                allowed: [400, 401], mustClose: true),
            // RFC 9110 §14.2: an invalid Range is ignored; the image does not exist (Glance: 404).
            Case(
                name: "range on a missing image",
                bytes: raw("GET /v2/images/00000000-0000-0000-0000-000000000000/file HTTP/1.1\r\nHost: x\r\nRange: bytes=abc\r\n\(alice)\r\n"),
                allowed: [404], mustClose: false),
            Case(
                name: "path traversal", bytes: raw("GET /v2/images/../../../../etc/passwd/file HTTP/1.1\r\nHost: x\r\n\(alice)\r\n"),
                allowed: [400, 404], mustClose: false),
        ]
    }

    @Test func malformedAndUnusualRequestsGetTheirStatusAndACloseWhereRequired() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let port = depot.port
            func raw(_ text: String) -> [UInt8] { Array(text.utf8) }

            for item in Self.cases(port: port) {
                let answer = try await exchange(port: port, item.bytes, untilClosed: item.mustClose)
                let codes = statuses(answer.text)
                #expect(codes.count == 1 && item.allowed.contains(codes[0]), "\(item.name): \(codes), allowed \(item.allowed.sorted()): \(answer.text.prefix(300))")
                #expect(answer.text.hasPrefix("HTTP/1.1 "), "\(item.name): an explicit status line first")
                #expect(answer.text.lowercased().contains("content-type: application/json"), "\(item.name): a JSON error")
                if item.mustClose { #expect(answer.closed, "\(item.name): RFC 9112 says the connection closes") }
                #expect(!answer.text.contains("root:x:0:0"), "\(item.name)")
            }

            // HTTP/1.0 gets an answer and a closed connection; pipelined requests are answered in order.
            let old = try await exchange(port: port, raw("GET /healthz HTTP/1.0\r\n\r\n"), untilClosed: true)
            #expect(statuses(old.text) == [200] && old.closed)
            let pipelined = try await exchange(
                port: port, raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                untilClosed: true)
            #expect(statuses(pipelined.text) == [200, 404, 200] && pipelined.closed)

            // A client that sends half a request and stops ties up nothing the others need.
            async let slow = exchange(port: port, raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "), untilClosed: true, deadline: 2)
            #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)
            _ = try await slow
            #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)
        }
    }

    /// A request to switch protocols (`Upgrade` with `Connection: upgrade`, or `CONNECT`) is
    /// answered in HTTP/1.1 with `Connection: close`, and the connection ends (RFC 9110 §7.8
    /// lets a server ignore `Upgrade`); a request after it on the same connection was never
    /// answered, because NIO's parser stops after such a request. The `Connection` field says
    /// what becomes of every connection (RFC 9112 §9.3): `close` when it ends, `keep-alive` to
    /// an HTTP/1.0 client that asked to keep it, which then carries its next request.
    @Test func theConnectionFieldSaysWhatBecomesOfTheConnection() async throws {
        try await withCachedImage(seed: 9312) { depot, image, _, file in
            let port = depot.port
            let alice = "X-Auth-Token: \(GlanceServer.alice)\r\n"
            func request(_ target: String, _ fields: String = "", version: String = "1.1") -> String {
                "GET \(target) HTTP/\(version)\r\nHost: x\r\n\(alice)\(fields)\r\n"
            }
            func connectionOptions(_ text: String) -> [String] {
                text.lowercased().split(separator: "\r\n").filter { $0.hasPrefix("connection:") }.map { $0.dropFirst(11).trimmingCharacters(in: .whitespaces) }
            }

            let upgrades = [
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
                "Connection: keep-alive, upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            ]
            for fields in upgrades {
                // A cached image's range (a hit, answered on the event loop until now), a
                // forwarded request, and Depot's own endpoint.
                for target in [file, "/v2/images/\(image.id)", "/healthz"] {
                    let range = target == file ? "Range: bytes=0-9\r\n" : ""
                    let started = ContinuousClock.now
                    let answer = try await exchange(port: port, Array((request(target, fields + range) + request("/healthz")).utf8), untilClosed: true)
                    let label = "\(target) with \(fields.prefix(40))"
                    #expect(statuses(answer.text) == [target == file ? 206 : 200], "\(label): \(answer.text.prefix(300))")
                    #expect(connectionOptions(answer.text) == ["close"], "\(label)")
                    #expect(answer.closed && ContinuousClock.now - started < .seconds(8), "\(label): the connection ends after the answer")
                }
            }
            // CONNECT asks to switch protocols as well; whatever its answer, the connection ends.
            let connect = try await exchange(
                port: port, Array(("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + request("/healthz")).utf8), untilClosed: true)
            #expect(statuses(connect.text).count == 1 && connect.closed, "\(connect.text.prefix(300))")

            // An Upgrade without the `upgrade` option asks for nothing: the connection goes on.
            let notAnUpgrade = try await exchange(
                port: port, Array((request(file, "Connection: keep-alive\r\nUpgrade: h2c\r\nRange: bytes=0-9\r\n") + request("/healthz", "Connection: close\r\n")).utf8),
                untilClosed: true)
            #expect(statuses(notAnUpgrade.text) == [206, 200] && notAnUpgrade.closed, "\(notAnUpgrade.text.prefix(300))")

            // Connection: close is answered with close, on the fast path's requests too.
            for target in [file, "/healthz"] {
                let closing = try await exchange(port: port, Array(request(target, "Connection: close\r\n").utf8), untilClosed: true)
                #expect(connectionOptions(closing.text) == ["close"] && closing.closed, "\(target): \(closing.text.prefix(300))")
            }

            // HTTP/1.0 keep-alive: the answer says keep-alive, and the next request is answered.
            for target in [file, "/healthz"] {
                let old = try await exchange(
                    port: port, Array((request(target, "Connection: keep-alive\r\n", version: "1.0") + request("/healthz", version: "1.0")).utf8), untilClosed: true)
                #expect(statuses(old.text) == [200, 200] && old.closed, "\(target): \(old.text.prefix(300))")
                #expect(connectionOptions(old.text) == ["keep-alive", "close"], "\(target)")
            }
        }
    }

    /// Fields a request may carry once, sent twice: `X-Auth-Token` is refused as Glance refuses
    /// it (401: its WSGI server joins the two values into one token no one issued), whichever
    /// token comes first and however the request reaches Depot (a head read from the wire, one
    /// the codec reads, after a hit on the same connection); Depot had answered as the first
    /// token's user. Two `Host` fields get 400 (RFC 9112 §3.2, and Glance's answer).
    @Test func fieldsSentTwiceAreRefusedAsGlanceRefusesThem() async throws {
        let glancePort = try #require(URLComponents(string: glance.url)?.port)
        try await withCachedImage(seed: 9313) { depot, image, _, file in
            let port = depot.port
            let alice = GlanceServer.alice, bob = GlanceServer.bob
            let plainHit = "GET \(file) HTTP/1.1\r\nHost: x\r\nX-Auth-Token: \(alice)\r\nRange: bytes=0-9\r\n\r\n"
            // (method, target, fields) of requests Glance refuses.
            var requests: [(String, String, String)] = []
            for tokens in [[alice, bob], [bob, alice], [alice, alice]] {
                let fields = tokens.map { "X-Auth-Token: \($0)\r\n" }.joined()
                requests += [("GET", file, fields + "Range: bytes=0-9\r\n"), ("GET", file, fields), ("HEAD", file, fields), ("GET", "/v2/images/\(image.id)", fields)]
            }
            for target in [file, "/v2/images/\(image.id)"] {
                requests.append(("GET", target, "Host: y\r\nX-Auth-Token: \(alice)\r\nRange: bytes=0-9\r\n"))
            }
            for (method, target, fields) in requests {
                let head = "\(method) \(target) HTTP/1.1\r\nHost: x\r\n\(fields)\r\n"
                let label = "\(method) \(target) \(fields.replacingOccurrences(of: "\r\n", with: " | "))"
                let reference = try await offThePool { () throws -> [WireAnswer] in
                    let fd = try connectLoopback(port: glancePort)
                    defer { close(fd) }
                    sendAll(fd, Array(head.utf8))
                    return readResponses(fd, methods: [method], deadline: .now + .seconds(10))
                }
                let expected = try #require(reference.first?.status, "\(label): Glance answered")
                #expect(expected == 401 || expected == 400, "\(label): Glance refuses it (\(expected))")
                // On a fresh connection, split in two (the codec reads it), and after a hit.
                for way in ["fresh", "split", "after a hit"] {
                    let answers = try await offThePool { () throws -> [WireAnswer] in
                        let fd = try connectLoopback(port: port)
                        defer { close(fd) }
                        switch way {
                        case "split":
                            let bytes = Array(head.utf8)
                            sendAll(fd, Array(bytes[..<(bytes.count / 2)]))
                            usleep(50_000)
                            sendAll(fd, Array(bytes[(bytes.count / 2)...]))
                            return readResponses(fd, methods: [method], deadline: .now + .seconds(10))
                        case "after a hit":
                            sendAll(fd, Array((plainHit + head).utf8))
                            return readResponses(fd, methods: ["GET", method], deadline: .now + .seconds(10))
                        default:
                            sendAll(fd, Array(head.utf8))
                            return readResponses(fd, methods: [method], deadline: .now + .seconds(10))
                        }
                    }
                    #expect(answers.last?.status == expected, "\(label), \(way): Depot \(answers.map(\.status)), Glance \(expected)")
                    #expect(answers.last.map { $0.body.count < 1000 } ?? false, "\(label), \(way): no image bytes")
                }
            }
        }
    }

    /// A path with percent-encodings is the resource it names once decoded (RFC 3986 §6.2.2.2),
    /// as Glance routes it (on WSGI's decoded PATH_INFO): `/v2/images/%32%30…/file` is the
    /// image's data from the cache, where Depot answered 404 "No image found" and Glance 200;
    /// `…/%66ile` is its file, answered with conditionals and ranges as `…/file` is, where it
    /// went to Glance past the cache. A dot segment once decoded is refused as one in the clear.
    @Test func anEncodedPathIsTheResourceItNames() async throws {
        try await withCachedImage(seed: 9314) { depot, image, bytes, plain in
            let reference = try await curl(depot.url + plain, ["-r", "0-9"])
            let etag = try #require(reference.headers["etag"])
            let id = Array(image.id)
            let encodedID = "%" + String(id[0].asciiValue!, radix: 16) + "%" + String(id[1].asciiValue!, radix: 16, uppercase: true) + String(id[2...])
            for path in ["/v2/images/\(encodedID)/file", "/v2/images/\(image.id)/%66ile", "/v2/images/\(encodedID)/%66%69%6C%65"] {
                let whole = try await curl(depot.url + path)
                #expect(whole.status == 200 && whole.body == bytes, "\(path): \(whole.status), \(whole.body.count) bytes")
                #expect(whole.headers["x-depot-cache"] == "hit", "\(path): from the cache")
                let range = try await curl(depot.url + path, ["-r", "10-19"])
                #expect(range.status == 206 && range.body == Array(bytes[10...19]), "\(path): \(range.status)")
                let conditional = try await curl(depot.url + path, ["-H", "If-None-Match: \(etag)"])
                #expect(conditional.status == 304, "\(path): \(conditional.status), as the plain path answers")
                let glanceAnswer = try await curl(glance.url + path)
                #expect(glanceAnswer.status == 200 && glanceAnswer.body == bytes, "\(path): Glance \(glanceAnswer.status)")
            }
            for path in ["/v2/images/%2E%2E/file", "/v2/images/%2e/file", "/v2/%2e%2e/images/\(image.id)/file"] {
                let refused = try await curl(depot.url + path)
                #expect(refused.status == 400 && refused.headers["content-type"] == "application/json", "\(path): \(refused.status)")
            }
        }
    }

    /// Every answer carries one `Date` (RFC 9110 §6.6.1: an origin server with a clock MUST
    /// send it in 2xx, 3xx and 4xx answers; Glance does): hits read from the wire, repeated
    /// heads, the codec's path, 304, 416, Depot's own errors and endpoints, HTTP/1.0, and a
    /// forwarded answer, which keeps Glance's. Depot sent none of its own.
    @Test func everyAnswerCarriesOneDate() async throws {
        try await withCachedImage(seed: 9315) { depot, image, _, file in
            let etag = try #require(try await curl(depot.url + file, ["-r", "0-0"]).headers["etag"])
            func request(_ target: String, _ fields: String = "", method: String = "GET", version: String = "1.1") -> String {
                "\(method) \(target) HTTP/\(version)\r\nHost: x\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\(fields)\r\n"
            }
            let close = "Connection: close\r\n"
            let exchanges: [(String, [String])] = [
                ("a hit read from the wire, then its repeated heads", [request(file, "Range: bytes=0-9\r\n"), request(file, "Range: bytes=10-19\r\n"), request(file, "Range: bytes=20-29\r\n" + close)]),
                ("hits on the codec's path", [request("/healthz"), request(file, "Range: bytes=0-9\r\n"), request(file, close, method: "HEAD")]),
                ("304 and 416", [request(file, "If-None-Match: \(etag)\r\n"), request(file, "Range: bytes=999999-\r\n" + close)]),
                ("Depot's own answers", [request("/nowhere"), request("/healthz"), request("/v2/images/not-an-id/file", close)]),
                ("HTTP/1.0", [request(file, "Range: bytes=0-9\r\n", version: "1.0")]),
                ("forwarded", [request("/v2/images/\(image.id)", close)]),
            ]
            let datePattern = try NSRegularExpression(pattern: "\r\ndate: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT\r\n", options: [.caseInsensitive])
            for (name, requests) in exchanges {
                let answer = try await exchange(port: depot.port, Array(requests.joined().utf8), untilClosed: true)
                let text = answer.text
                let dates = datePattern.numberOfMatches(in: text, range: NSRange(text.startIndex..., in: text))
                let codes = statuses(text)
                #expect(codes.count == requests.count && answer.closed, "\(name): \(codes)")
                #expect(dates == requests.count, "\(name): \(dates) Date fields in \(codes.count) answers: \(text.prefix(400))")
            }
        }
    }

    /// RFC 9112 §3.2.2: "a server MUST accept the absolute-form in requests", and answer it as
    /// the same target in origin-form.
    @Test func anAbsoluteFormTargetIsAnsweredAsItsOriginForm() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            for path in ["/healthz", "/v2/images"] {
                let origin = try await exchange(port: depot.port, Array("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), untilClosed: false)
                let absolute = try await exchange(port: depot.port, Array("GET \(depot.url)\(path) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), untilClosed: false)
                #expect(statuses(origin.text).count == 1)
                // RFC 9112 section 3.2.2: a server MUST accept the absolute form (found by issue
                // 18's test review: Depot routed the whole URL as a path, 404).
                #expect(statuses(absolute.text) == statuses(origin.text), "\(path): \(absolute.text.prefix(300))")
            }
        }
    }
}
