import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HTTPCore

/// RFC 9112 section 3.2.2: the absolute form of a request target is accepted as its origin
/// form, and its authority replaces `Host`.
@Suite struct AbsoluteFormTargetTests {
    @Test func absoluteFormsBecomeOriginForms() {
        #expect(AbsoluteFormTarget.split("http://depot:9494/v2/images?limit=1")! == ("depot:9494", "/v2/images?limit=1"))
        #expect(AbsoluteFormTarget.split("HTTPS://[::1]:9494/healthz")! == ("[::1]:9494", "/healthz"))
        #expect(AbsoluteFormTarget.split("http://depot")! == ("depot", "/"))
        #expect(AbsoluteFormTarget.split("http://depot?x=1")! == ("depot", "/?x=1"))
        #expect(AbsoluteFormTarget.split("/v2/images") == nil)
        #expect(AbsoluteFormTarget.split("*") == nil)
        #expect(AbsoluteFormTarget.split("http:///x") == nil)
        #expect(AbsoluteFormTarget.split("ftp://depot/x") == nil)
    }

    @Test func theHandlerRewritesTheHeadOnly() throws {
        let channel = EmbeddedChannel(handler: AbsoluteFormTarget())
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "http://depot:9494/v2/images")
        head.headers.add(name: "Host", value: "elsewhere")
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        guard case let .head(seen) = try #require(try channel.readInbound(as: HTTPServerRequestPart.self)) else {
            Issue.record("no head")
            return
        }
        #expect(seen.uri == "/v2/images")
        #expect(seen.headers["host"] == ["depot:9494"])
        guard case .end = try #require(try channel.readInbound(as: HTTPServerRequestPart.self)) else {
            Issue.record("no end")
            return
        }
    }
}
