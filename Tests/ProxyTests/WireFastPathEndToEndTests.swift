import DepotTestSupport
import Foundation
import Glance
import Testing

@testable import Proxy

/// Hits answered from their bytes before the HTTP codec (`WireFastPath`), on a real Depot over
/// real sockets: pipelined with requests only the codec answers, they keep their order; a
/// client that ends its side after its request still gets the whole answer; and corked answers
/// leave whole and at once.
@Suite(.serialized) struct WireFastPathEndToEndTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func pipelinedHitsAndOtherRequestsAreAnsweredInOrder() async throws {
        try await withWarmImage(count: 1 << 20, seed: 2412) { depot, image, bytes, path, port in
            @Sendable func request(_ method: String, _ target: String, range: String? = nil) -> String {
                "\(method) \(target) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n" + (range.map { "Range: bytes=\($0)\r\n" } ?? "") + "\r\n"
            }
            // (method, target, range, expected status, expected body: nil = only the status is checked)
            let exchanges: [(String, String, String?, Int, [UInt8]?)] = [
                ("GET", path, "0-4095", 206, Array(bytes[0..<4096])),
                ("GET", "/healthz", nil, 200, nil),
                ("GET", path, "4096-8191", 206, Array(bytes[4096..<8192])),
                ("HEAD", path, nil, 200, []),
                ("GET", "/v2/images/\(image.id)", nil, 200, nil),
                ("GET", path, "1000000-", 206, Array(bytes[1_000_000...])),
            ]
            let before = depot.server.wireFastPathAnswers
            let wire = exchanges.map { request($0.0, $0.1, range: $0.2) }.joined()
            let received = try await offThePool {
                let fd = try connectLoopback(port: port)
                defer { close(fd) }
                sendAll(fd, Array(wire.utf8))
                return readResponses(fd, methods: exchanges.map(\.0), deadline: .now + .seconds(30))
            }
            #expect(received.count == exchanges.count)
            for (answer, exchange) in zip(received, exchanges) {
                #expect(answer.status == exchange.3, "\(exchange.0) \(exchange.1) \(exchange.2 ?? "")")
                if let body = exchange.4 { #expect(answer.body == body, "\(exchange.0) \(exchange.1) \(exchange.2 ?? ""): \(answer.body.count) bytes") }
            }
            // The first hit came before anything the codec had to answer; the rest followed one.
            #expect(depot.server.wireFastPathAnswers == before + 1)

            // Once the codec is idle again, hits on the same connection are read from the wire.
            let again = try await offThePool {
                let fd = try connectLoopback(port: port)
                defer { close(fd) }
                sendAll(fd, Array(request("GET", "/healthz").utf8))
                _ = readResponses(fd, methods: ["GET"], deadline: .now + .seconds(10))
                sendAll(fd, Array(request("GET", path, range: "10-19").utf8))
                return readResponses(fd, methods: ["GET"], deadline: .now + .seconds(10))
            }
            #expect(again.first?.status == 206 && again.first?.body == Array(bytes[10...19]))
            #expect(depot.server.wireFastPathAnswers == before + 2)
        }
    }

    /// With more connections open than event loops, answers leave corked (`TCP_CORK`, set on the
    /// socket's own descriptor, `ConnectionSocket`) and are uncorked at once: an answer smaller
    /// than a segment left corked would wait for the kernel's 200 ms timer. 40 ranges one after
    /// another, each awaited, on the last of several open connections: whole, and in well
    /// under 40 × 200 ms.
    @Test func corkedAnswersLeaveWholeAndAtOnce() async throws {
        try await withWarmImage(count: 1 << 20, seed: 2419) { depot, image, bytes, path, port in
            let before = depot.server.wireFastPathAnswers
            let elapsed = try await offThePool {
                // More connections than the server's event loops (one per core by default).
                let held = try (0..<(ProcessInfo.processInfo.activeProcessorCount + 2)).map { _ in try connectLoopback(port: port) }
                defer { held.forEach { close($0) } }
                let fd = held[held.count - 1]
                let start = ContinuousClock.now
                for round in 0..<40 {
                    let offset = round * 4096 * 7 % (bytes.count - 4096)
                    let request = "GET \(path) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\nRange: bytes=\(offset)-\(offset + 4095)\r\n\r\n"
                    sendAll(fd, Array(request.utf8))
                    let answer = readResponses(fd, methods: ["GET"], deadline: .now + .seconds(10)).first
                    #expect(answer?.status == 206 && answer?.body == Array(bytes[offset..<(offset + 4096)]), "round \(round)")
                }
                return ContinuousClock.now - start
            }
            #expect(depot.server.wireFastPathAnswers == before + 40)
            #expect(elapsed < .seconds(4), "40 corked answers took \(elapsed): some waited for the cork's timer")
        }
    }

    @Test func aClientThatEndsItsSideAfterItsRequestGetsTheWholeAnswer() async throws {
        try await withWarmImage(count: 8 << 20, seed: 2413) { depot, image, bytes, path, port in
            let before = depot.server.wireFastPathAnswers
            let received = try await offThePool {
                // A small window: most of the answer is still going out when the end of the
                // client's side reaches Depot.
                let fd = try connectLoopback(port: port, receiveBuffer: 32 * 1024)
                defer { close(fd) }
                sendAll(fd, Array("GET \(path) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n".utf8))
                shutdown(fd, Int32(SHUT_WR))
                usleep(300_000)
                return readUntilClosed(fd, deadline: .now + .seconds(30))
            }
            #expect(depot.server.wireFastPathAnswers == before + 1)
            let answers = parseResponses(received.bytes, methods: ["GET"])
            #expect(answers.first?.status == 200)
            #expect(answers.first?.body.count == bytes.count && answers.first?.body == bytes, "\(received.bytes.count) bytes received")
            #expect(received.closed, "the connection closes after the answer")
        }
    }

    /// A hit answered on the wire lets go of its blob (its read, which eviction respects, and
    /// the descriptor its file regions borrow) only once its last byte has left, or the
    /// connection is gone: a slow reader's answer is still going out long after the flush that
    /// started it, and a reader that leaves halfway must not keep the blob from eviction.
    @Test func aHitHoldsItsBlobUntilItsLastByteHasLeft() async throws {
        let bytes = pseudoRandomBytes(count: 8 << 20, seed: 2417)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try await withDepot(glanceURL: glance.url) { depot in
            let path = "/v2/images/\(image.id)/file"
            try await warm(depot, path: path, imageID: image.id)
            let digest = try #require(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id))
            let port = try #require(depot.server.port)
            let request = Array("GET \(path) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n".utf8)
            func refusal() async -> String? {
                do {
                    _ = try await depot.cache.evict(digest)
                    return nil
                } catch {
                    return "\(error)"
                }
            }

            // A reader that leaves halfway: the blob is free again once the connection is gone.
            // Each reader's answer is waited for by the counter the wire path bumps as it writes
            // one, not a guessed delay: an eviction before it would really evict.
            func waitForAnswers(_ count: Int) async throws {
                try await waitUntil("the wire path wrote answer \(count)", timeout: .seconds(30), interval: .milliseconds(10)) { depot.server.wireFastPathAnswers >= count }
            }
            let before = depot.server.wireFastPathAnswers
            let leaving = try connectLoopback(port: port, receiveBuffer: 32 * 1024)
            sendAll(leaving, request)
            try await waitForAnswers(before + 1)
            #expect(depot.server.wireFastPathAnswers == before + 1)
            #expect(await refusal()?.contains("being read") == true, "evictable while its answer goes out")
            close(leaving)
            var freed = false
            let deadline = ContinuousClock.now + .seconds(10)
            while !freed, ContinuousClock.now < deadline {
                freed = await refusal() == nil
                if !freed { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(freed, "the read ended with the connection")

            // Cached again; a slow reader gets every byte, and the blob is held until then.
            try await warm(depot, path: path, imageID: image.id)
            let again = try #require(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id))
            #expect(again == digest)
            let beforeSlow = depot.server.wireFastPathAnswers
            let slow = try connectLoopback(port: port, receiveBuffer: 32 * 1024)
            defer { close(slow) }
            sendAll(slow, request)
            try await waitForAnswers(beforeSlow + 1)
            #expect(depot.server.wireFastPathAnswers == beforeSlow + 1)
            #expect(await refusal()?.contains("being read") == true, "evictable while its answer goes out")
            let received = try await offThePool { readOneResponse(slow, deadline: .now + .seconds(30)) }
            let answer = parseResponses(received.bytes, methods: ["GET"]).first
            #expect(answer?.status == 200 && answer?.body == bytes, "\(received.bytes.count) bytes received")
            let settled = ContinuousClock.now + .seconds(10)
            var evicted = false
            while !evicted, ContinuousClock.now < settled {
                evicted = await refusal() == nil
                if !evicted { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(evicted, "the read ended with its last byte")
        }
    }

    /// A connection keeps the fingerprint of the token its last request carried (the fast
    /// path's memo): another token on the same connection is still asked about on its own. One
    /// connection answered from the wire, one pinned to the codec (its first head has a value
    /// with trailing white space, which `WireRequestHead` leaves to the codec): another
    /// project's token, and a token Glance does not know, between the owner's hits get Glance's
    /// refusals, and the owner's next request is a hit again.
    @Test func anotherTokenOnTheSameConnectionIsDecidedOnItsOwn() async throws {
        let bytes = pseudoRandomBytes(count: 64 << 10, seed: 2414)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let glanceFile = "\(glance.url)/v2/images/\(image.id)/file"
        let refusals = [try await curl(glanceFile, token: GlanceServer.bob).status, try await curl(glanceFile, token: "garbage").status]
        #expect(refusals == [404, 401], "Glance's own answers to the other tokens")
        try await withDepot(glanceURL: glance.url) { depot in
            let path = "/v2/images/\(image.id)/file"
            try await warm(depot, path: path, imageID: image.id)
            let port = try #require(depot.server.port)
            let tokens = [GlanceServer.alice, GlanceServer.bob, GlanceServer.alice, "garbage", GlanceServer.alice]
            let expected = [206, refusals[0], 206, refusals[1], 206]
            for pinnedToCodec in [false, true] {
                let before = depot.server.wireFastPathAnswers
                let codecBefore = depot.server.codecFastPathAnswers
                let answers = try await offThePool {
                    let fd = try connectLoopback(port: port)
                    defer { close(fd) }
                    if pinnedToCodec {
                        sendAll(fd, Array("GET /healthz HTTP/1.1\r\nHost: depot\r\nX-Odd: x \r\n\r\n".utf8))
                        _ = readResponses(fd, methods: ["GET"], deadline: .now + .seconds(10))
                    }
                    var answers: [WireAnswer] = []
                    for token in tokens {
                        sendAll(fd, Array("GET \(path) HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(token)\r\nRange: bytes=0-4095\r\n\r\n".utf8))
                        answers += readResponses(fd, methods: ["GET"], deadline: .now + .seconds(30))
                    }
                    return answers
                }
                let where_ = pinnedToCodec ? "through the codec" : "from the wire"
                #expect(answers.map(\.status) == expected, "\(where_)")
                for (answer, status) in zip(answers, expected) where status == 206 {
                    #expect(answer.body == Array(bytes[0..<4096]), "\(where_)")
                }
                #expect(depot.server.wireFastPathAnswers == before + (pinnedToCodec ? 0 : 3), "\(where_)")
                // The owner's three requests are the fast path's on either way in; the others go to the serve loop.
                #expect(depot.server.codecFastPathAnswers == codecBefore + (pinnedToCodec ? 3 : 0), "\(where_)")
            }
        }
    }

    /// A Depot with an image of `count` pseudo-random bytes (from `seed`) cached and answered
    /// from the wire once: `body` gets Depot, the image, its bytes, its file's path and Depot's port.
    func withWarmImage(
        count: Int, seed: UInt64, _ body: (DepotHarness, GlanceImage, [UInt8], String, Int) async throws -> Void
    ) async throws {
        let bytes = pseudoRandomBytes(count: count, seed: seed)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        try await withDepot(glanceURL: glance.url) { depot in
            let path = "/v2/images/\(image.id)/file"
            try await warm(depot, path: path, imageID: image.id)
            try await body(depot, image, bytes, path, try #require(depot.server.port))
        }
    }

    /// Fills the image and makes the token's decision, so the next hit is answered on the event loop.
    func warm(_ depot: DepotHarness, path: String, imageID: String) async throws {
        _ = try await curl(depot.url + path)
        let deadline = ContinuousClock.now + .seconds(30)
        while try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: imageID) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await curl(depot.url + path, ["-r", "0-0"]).status == 206)
    }
}

/// One response read off a connection.
struct WireAnswer {
    var status: Int
    var body: [UInt8]
}

/// Reads responses until `methods.count` are whole (a `HEAD` answer has no body) or the deadline.
func readResponses(_ fd: Int32, methods: [String], deadline: ContinuousClock.Instant) -> [WireAnswer] {
    var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while ContinuousClock.now < deadline {
        if parseResponses(received, methods: methods).count == methods.count { break }
        let n = recv(fd, &buffer, buffer.count, 0)
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { break }
        if n > 0 { received += buffer[..<n] }
    }
    return parseResponses(received, methods: methods)
}

/// The whole responses at the start of `bytes`, framed by `Content-Length`.
func parseResponses(_ bytes: [UInt8], methods: [String]) -> [WireAnswer] {
    var answers: [WireAnswer] = []
    var start = 0
    for method in methods {
        guard let end = bytes[start...].firstRange(of: Array("\r\n\r\n".utf8)) else { break }
        let head = String(decoding: bytes[start..<end.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { break }
        let length = lines.first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        let bodyLength = method == "HEAD" || status == 304 || status == 204 ? 0 : length
        guard bytes.count - end.upperBound >= bodyLength else { break }
        answers.append(WireAnswer(status: status, body: Array(bytes[end.upperBound..<(end.upperBound + bodyLength)])))
        start = end.upperBound + bodyLength
    }
    return answers
}
