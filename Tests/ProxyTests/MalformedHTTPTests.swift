import DepotTestSupport
import Foundation
import Testing

/// Raw, malformed or unusual HTTP on the socket: every case gets a 4xx or a closed
/// connection, never a crash, and the server keeps serving.
@Suite(.serialized) struct MalformedHTTPTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// Sends `bytes` on a new connection and returns what came back until the server closed
    /// the connection or went quiet for `quiet` seconds.
    func exchange(port: Int, _ bytes: [UInt8], quiet: Double = 1.0) async throws -> String {
        try await offThePool {
            let fd = try connectLoopback(port: port)
            defer { close(fd) }
            var timeout = timeval(tv_sec: Int(quiet), tv_usec: Int((quiet - Double(Int(quiet))) * 1e6))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // The server may close early on a refused request.
            sendAll(fd, bytes)
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { break }
                received += buffer[..<n]
            }
            return String(decoding: received, as: UTF8.self)
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

    @Test func malformedAndUnusualRequestsGetA4xxOrAClosedConnection() async throws {
        let depot = try await DepotHarness(glanceURL: glance.url)
        defer { Task { await depot.stop() } }
        let port = depot.port
        func raw(_ text: String) -> [UInt8] { Array(text.utf8) }

        let cases: [(name: String, bytes: [UInt8])] = [
            ("garbage request line", raw("GARBAGE\r\n\r\n")),
            ("no version", raw("GET /healthz\r\n\r\n")),
            ("bad version", raw("GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")),
            ("header without colon", raw("GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")),
            ("binary in the target", [71, 69, 84, 32, 47, 0xFF, 0xFE, 0x00, 32] + raw("HTTP/1.1\r\nHost: x\r\n\r\n")),
            ("huge header", raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 200_000) + "\r\n\r\n")),
            ("huge target", raw("GET /v2/images/" + String(repeating: "b", count: 20_000) + " HTTP/1.1\r\nHost: x\r\n\r\n")),
            ("absolute-form target", raw("GET http://127.0.0.1:\(port)/v2/images HTTP/1.1\r\nHost: x\r\n\r\n")),
            ("content-length and chunked", raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello")),
            ("negative content-length", raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")),
            ("bad chunk size", raw("PUT /v2/images/x/file HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")),
            ("range on a missing image", raw("GET /v2/images/00000000-0000-0000-0000-000000000000/file HTTP/1.1\r\nHost: x\r\nRange: bytes=abc\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n")),
            ("path traversal", raw("GET /v2/images/../../../../etc/passwd/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n")),
        ]
        for (name, bytes) in cases {
            let answer = try await exchange(port: port, bytes)
            let codes = statuses(answer)
            // A 4xx, or nothing at all (the connection closed); never a 2xx, 5xx or a leak.
            #expect(codes.allSatisfy { (400..<500).contains($0) }, "\(name): \(codes) \(answer.prefix(300))")
            #expect(!answer.contains("root:x:0:0"), "\(name)")
        }

        // HTTP/1.0 gets an answer and a closed connection; pipelined requests are answered in order.
        let old = try await exchange(port: port, raw("GET /healthz HTTP/1.0\r\n\r\n"))
        #expect(statuses(old) == [200])
        let pipelined = try await exchange(port: port, raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        #expect(statuses(pipelined) == [200, 404, 200])

        // A client that sends half a request and stops ties up nothing the others need.
        async let slow = exchange(port: port, raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "), quiet: 2)
        #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)
        _ = try await slow
        #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)
    }
}
