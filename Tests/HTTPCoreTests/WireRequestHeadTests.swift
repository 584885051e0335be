import DepotTestSupport
import NIOCore
import NIOEmbedded
import NIOHTTP1
import PropertyBased
import Synchronization
import Testing

@testable import HTTPCore

/// `WireRequestHead` against NIO's `HTTPRequestDecoder`, the reader it stands in for: every
/// head it accepts must be one the decoder reads as exactly the same request, with nothing
/// left over and no body. What it does not accept is the decoder's to answer, so it may turn
/// away more than the decoder does, never less.
@Suite struct WireRequestHeadTests {
    static let inputs = 20_000

    @Test func everyAcceptedHeadIsTheOneNIOsDecoderReads() async {
        let input = Generator(run: { HeadInput.generate(&$0) }, shrink: { FuzzShrink.removals($0) })
        let counts = Mutex((inputs: 0, accepted: 0))
        await propertyCheck(count: Self.inputs, input: input) { bytes in
            let accepted = bytes.withUnsafeBytes(WireRequestHead.read) != nil
            counts.withLock { $0 = ($0.inputs + 1, $0.accepted + (accepted ? 1 : 0)) }
            if let failure = Self.disagreement(bytes) { Issue.record("\(failure): \(fuzzQuote(bytes))") }
        }
        let (inputs, accepted) = counts.withLock { $0 }
        print("wire request heads: \(accepted) of \(inputs) accepted, each read as NIO's decoder reads it")
        // Enough of both kinds that the comparison means something.
        #expect(inputs >= Self.inputs && accepted >= inputs / 20 && accepted <= inputs / 2)
    }

    @Test func plainHitsAreAcceptedAndEverythingThatChangesFramingIsNot() {
        func accepts(_ text: String) -> Bool { Array(text.utf8).withUnsafeBytes { WireRequestHead.read($0) != nil } }
        let hit = "GET /v2/images/abc/file HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: t\r\nRange: bytes=0-4095\r\n\r\n"
        #expect(accepts(hit))
        #expect(accepts("HEAD /v2/images/abc/file HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n"))
        #expect(accepts("GET / HTTP/1.1\r\n\r\n"))
        for refused in [
            "GET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "GET /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", "GET /x HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            "GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", "GET /x HTTP/1.1\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n\r\n", "GET /x HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET /x HTTP/1.0\r\n\r\n", "PUT /x HTTP/1.1\r\n\r\n", "get /x HTTP/1.1\r\n\r\n", "GET http://depot/x HTTP/1.1\r\n\r\n",
            "GET /x#frag HTTP/1.1\r\n\r\n", "GET /x HTTP/1.1\nHost: a\n\n", "GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost : a\r\n\r\n", "GET /x HTTP/1.1\r\nX: \u{1}\r\n\r\n", "GET /x HTTP/1.1\r\nX: é\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\n", "GET /x HTTP/1.1\r\nHost: a\t\r\n\r\n", "GET /x HTTP/1.1\r\nHost: a \r\n\r\n", "GET /x HTTP/1.1\r\nHost: a\r\n\r", "GET  /x HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: WireRequestHead.maximumLength) + "\r\n\r\n",
            "GET /x HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: WireRequestHead.maximumFields + 1) + "\r\n",
        ] {
            #expect(!accepts(refused), "\(fuzzQuote(refused))")
        }
        // Heads that follow each other are counted; anything else among them is not.
        #expect(Array((hit + hit).utf8).withUnsafeBytes(WireRequestHead.count) == 2)
        #expect(Array((hit + "GET /x").utf8).withUnsafeBytes(WireRequestHead.count) == nil)
        #expect(Array((hit + "PUT /x HTTP/1.1\r\n\r\n").utf8).withUnsafeBytes(WireRequestHead.count) == nil)
    }

    /// The token test's two words are RFC 9110's `tchar`, byte for byte.
    @Test func theTokenBitsAreTheRFCsTokenCharacters() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for byte in UInt8.min...UInt8.max {
            #expect(WireRequestHead.isTokenCharacter(byte) == tchar.contains(byte), "byte \(byte)")
        }
    }

    /// A common field name is the string decoding it would give, and only an exact spelling
    /// is one.
    @Test func aCommonNameIsTheDecodedName() {
        let common = [
            "Host", "host", "Range", "range", "Accept", "accept", "If-Range", "if-range", "User-Agent", "user-agent", "Connection",
            "connection", "X-Auth-Token", "x-auth-token", "If-None-Match", "if-none-match", "Accept-Encoding", "accept-encoding",
        ]
        for name in common {
            #expect(Array(name.utf8).withUnsafeBytes(WireRequestHead.commonName) == name)
        }
        for other in ["HOST", "Hosts", "Hos", "X-Auth-Tokem", "x-Auth-Token", "Rangé", "If_Range", "Content-Length", "Etag", "X"] {
            #expect(Array(other.utf8).withUnsafeBytes(WireRequestHead.commonName) == nil, "\(other)")
        }
        let head = "GET /x HTTP/1.1\r\nhost: a\r\nHOST-X: b\r\nAccept-Encoding: identity\r\nx-auth-token: t\r\n\r\n"
        let read = Array(head.utf8).withUnsafeBytes(WireRequestHead.read)
        #expect(read?.fields.map(\.0) == ["host", "HOST-X", "Accept-Encoding", "x-auth-token"])
        #expect(read?.fields.map(\.1) == ["a", "b", "identity", "t"])
    }

    /// Why `bytes` shows the reader and the decoder disagreeing, or nil.
    static func disagreement(_ bytes: [UInt8]) -> String? {
        guard let accepted = bytes.withUnsafeBytes(WireRequestHead.read) else { return nil }
        guard bytes.withUnsafeBytes(WireRequestHead.length) == accepted.length else { return "length() and read() differ" }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes[..<accepted.length]))
        } catch {
            return "accepted, but NIO's decoder fails: \(error)"
        }
        var parts: [HTTPServerRequestPart] = []
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
        guard parts.count == 2, case let .head(head) = parts[0], case .end(nil) = parts[1] else {
            return "accepted, but NIO's decoder reads \(parts)"
        }
        let mine = accepted.head
        guard head.method == mine.method, head.uri == mine.uri, head.version == mine.version else {
            return "request line: NIO \(head.method) \(head.uri) \(head.version), wire \(mine.method) \(mine.uri) \(mine.version)"
        }
        let theirs = head.headers.map { "\($0.name): \($0.value)" }
        let ours = mine.headers.map { "\($0.name): \($0.value)" }
        guard theirs == ours else { return "fields: NIO \(theirs), wire \(ours)" }
        guard head.isKeepAlive == mine.isKeepAlive else { return "keep-alive: NIO \(head.isKeepAlive), wire \(mine.isKeepAlive)" }
        return nil
    }
}

/// Request heads from a grammar of the plain and the unusual (methods, targets, versions,
/// fields that change framing, whitespace, line ends, bytes outside ASCII), then byte mutations.
enum HeadInput {
    static let methods = ["GET", "GET", "GET", "HEAD", "get", "POST", "PUT", "OPTIONS", "DELETE", "G\tET", "GETT"]
    static let targets = [
        "/v2/images/8b1f0c4e-5b8c-4a8e-9d9f-2f9a6c1e7d10/file", "/v2/images/x/file?a=b&c=%20", "/", "*", "http://depot:9494/v2/images",
        "/a#b", "/%41%", "/é", "/a\tb", "/a b", "/[]{}|\\^`\"<>", "//x", "/x?y=/z/../w", "/~!$&'()*+,;=:@",
    ]
    static let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "http/1.1", "HTTP/2.0", "HTTP/1.10", "HTTP/1.1 "]
    static let names = [
        "Host", "Range", "X-Auth-Token", "If-Range", "If-None-Match", "Connection", "connection", "Content-Length", "Transfer-Encoding",
        "Expect", "Upgrade", "Accept", "User-Agent", "X:Y", "Bad Name", "", "X-\u{7f}", "É", "!#$%&'*+-.^_`|~",
    ]
    static let values = [
        "bytes=0-4095", "bytes=-1", "keep-alive", "Keep-Alive", "close", "upgrade", "0", "chunked", "100-continue", "  spaced  ", "\ttab\t",
        "a\u{7f}b", "é", "", "x\r\n y", "gAAAAABk-token", "\"etag\"", "a\rb", "a\nb", "a\u{0}b",
    ]

    /// Plain heads, the kind hits come in, with the targets, fields and values they may carry.
    static let plainTargets = [
        "/v2/images/8b1f0c4e-5b8c-4a8e-9d9f-2f9a6c1e7d10/file", "/v2/images/x/file?a=b&c=%20", "/", "/[]{}|\\^`\"<>", "//x",
        "/x?y=/z/../w", "/~!$&'()*+,;=:@", "/%00", "/a?", "/?#",
    ]
    static let plainNames = [
        "Host", "Range", "X-Auth-Token", "If-Range", "If-None-Match", "Connection", "Accept", "User-Agent", "!#$%&'*+-.^_`|~",
        "host", "range", "x-auth-token", "accept-encoding", "Accept-Encoding", "user-agent", "HOST", "X-Auth-Tokens", "Rang",
    ]
    static let plainValues = [
        "bytes=0-4095", "bytes=0-0,5-9", "keep-alive", "Keep-Alive", "gAAAAABk-token", "\"etag\"", "", " leading", "\tleading", "a b\tc",
        "W/\"x\", \"y\"", "curl/7.88.1", "*/*", "~`!@#$%^&*()_+-={}[]|\\:;'<>?,./",
    ]

    static func generate(_ rng: inout some RandomNumberGenerator) -> [UInt8] {
        let plain = rng.chance(0.6)
        let end = plain || rng.chance(0.9) ? "\r\n" : rng.pick(["\n", "\r", "\r\r\n", " \r\n"])
        var text = plain ? rng.pick(["GET", "GET", "HEAD"]) + " " : rng.pick(methods) + rng.pick([" ", " ", "  ", "\t"])
        text += (plain ? rng.pick(plainTargets) : rng.pick(targets)) + " " + (plain ? "HTTP/1.1" : rng.pick(versions)) + end
        for _ in 0..<rng.smallCount(max: 8) {
            let separator = plain || rng.chance(0.85) ? rng.pick([": ", ":"]) : rng.pick([" : ", ":\t", "::"])
            let name = plain || rng.chance(0.5) ? rng.pick(plainNames) : rng.pick(names)
            let value = plain || rng.chance(0.5) ? rng.pick(plainValues) : rng.pick(values)
            text += name + separator + value + (plain || rng.chance(0.95) ? "\r\n" : end)
        }
        text += plain || rng.chance(0.9) ? "\r\n" : end
        var bytes = Array(text.utf8)
        if rng.chance(plain ? 0.2 : 0.3) {
            bytes = mutate(bytes, rng: &rng, rounds: rng.int(1...3), interesting: [Array("\r\n".utf8), Array(": ".utf8), [0], [0x80], [9], [32]])
        }
        return bytes
    }
}
