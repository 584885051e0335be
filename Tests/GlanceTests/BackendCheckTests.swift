import DepotTestSupport
import Foundation
import Glance
import Testing

/// Whether a backend URL is a Glance, judged by its version document; and Glance's error
/// messages as text.
@Suite struct BackendCheckTests {
    func check(_ url: String) async -> BackendCheck {
        await makeClient(url).checkBackend(timeout: .seconds(10))
    }

    /// Glance's CURRENT version id, read from its own version document.
    func currentVersion(_ glance: GlanceServer) async throws -> String {
        let result = try await spawn("/usr/bin/curl", ["-s", glance.url + "/versions"])
        let document = try JSONSerialization.jsonObject(with: Data(result.stdout)) as? [String: Any]
        let versions = document?["versions"] as? [[String: Any]] ?? []
        return try #require(versions.first { $0["status"] as? String == "CURRENT" }?["id"] as? String)
    }

    @Test func aRealGlanceIsAGlance() async throws {
        let glance = try await GlanceServer.shared()
        #expect(await check(glance.url) == .glance(version: try await currentVersion(glance)))
        #expect(await check(glance.url + "/") == .glance(version: try await currentVersion(glance)))
    }

    @Test(arguments: ["/v2", "/v2/", "/v2.1", "/v1"])
    func aVersionSuffixIsNamedAsTheMistake(suffix: String) async throws {
        let glance = try await GlanceServer.shared()
        let version = suffix.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        // The client's configuration drops a trailing "/" from the endpoint.
        let given = glance.url + "/" + version
        #expect(await check(glance.url + suffix) == .misconfigured("the URL \(given) ends in /\(version); give the endpoint without it (\(glance.url))"))
    }

    @Test func aPathGlanceDoesNotKnowGetsItsLinksAsTheEndpoint() async throws {
        // Glance's version negotiation answers 300 with its document to /image/versions.
        let glance = try await GlanceServer.shared()
        guard case let .misconfigured(message) = await check(glance.url + "/image") else {
            Issue.record("a URL with a path Glance does not know was accepted")
            return
        }
        #expect(message.contains("answered 300"), "\(message)")
        #expect(message.contains("(\(glance.url))"), "\(message)")
    }

    @Test func a404PageIsNotAnImageService() async throws {
        let web = try await StaticWebServer.start()
        defer { web.stop() }
        guard case let .misconfigured(message) = await check(web.url) else {
            Issue.record("a web server answering 404 was accepted")
            return
        }
        #expect(message.contains("answered 404 with HTML"), "\(message)")
        #expect(message.contains("not an image service"), "\(message)")
        #expect(!message.contains("<"), "\(message)")
    }

    @Test func anAnswerThatIsNotJSONIsNotAnImageService() async throws {
        let web = try await StaticWebServer.start(files: ["versions": "<html><body><h1>Welcome to nginx!</h1></body></html>"])
        defer { web.stop() }
        guard case let .misconfigured(message) = await check(web.url) else {
            Issue.record("a web page was accepted as a version document")
            return
        }
        #expect(message.contains("not JSON"), "\(message)")
    }

    @Test func JSONWithoutAVersionListIsNotAnImageService() async throws {
        // Keystone's version document has `versions.values`, not a list.
        let keystoneLike = #"{"versions": {"values": [{"id": "v3.14", "status": "stable"}]}}"#
        let web = try await StaticWebServer.start(files: ["versions": keystoneLike])
        defer { web.stop() }
        guard case let .misconfigured(message) = await check(web.url) else {
            Issue.record("a JSON document without Glance's versions was accepted")
            return
        }
        #expect(message.contains("without a list of versions"), "\(message)")
    }

    @Test func anUnreachableBackendIsUnavailableNotMisconfigured() async throws {
        let port = try freeLoopbackPort()
        guard case let .unavailable(message) = await check("http://127.0.0.1:\(port)") else {
            Issue.record("a closed port was not reported as unavailable")
            return
        }
        #expect(message.contains("127.0.0.1:\(port)"), "\(message)")
    }

    @Test func a503IsUnavailableNotMisconfigured() async throws {
        let glance = try await GlanceServer.shared()
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        proxy.setFaults { $0.serviceUnavailableCount = 1 }
        guard case let .unavailable(message) = await check("http://127.0.0.1:\(proxy.port)") else {
            Issue.record("a 503 was not reported as unavailable")
            return
        }
        #expect(message.contains("503"), "\(message)")
    }

    @Test func glancesErrorMessagesArriveAsText() async throws {
        // Glance's webob errors carry "<br /><br />" in JSON and whole HTML pages otherwise.
        let glance = try await GlanceServer.shared()
        let client = makeClient(glance.url)
        let missing = "0d1ee5e6-52c6-4a5e-9b3a-3b4d1a5b0f01"
        do {
            _ = try await client.showImage(missing)
            Issue.record("a missing image was found")
        } catch {
            guard case let .http(404, message, _, _) = error else { throw error }
            #expect(message == "No image found with ID \(missing)", "\(message)")
        }
        let wrongPath = makeClient(glance.url + "/v2")
        do {
            _ = try await wrongPath.showImage(missing)
            Issue.record("a wrong path answered an image")
        } catch {
            guard case let .http(404, message, _, _) = error else { throw error }
            #expect(message == "The resource could not be found.", "\(message)")
        }
        do {
            _ = try await wrongPath.download(imageID: missing) { _ in }
            Issue.record("a wrong path answered image data")
        } catch {
            guard case let .http(404, message, _, _) = error else { throw error }
            #expect(message == "The resource could not be found.", "\(message)")
        }
    }

    /// An HTTPS backend that breaks the connection (reset, empty reply, handshake failure) is
    /// named as a TLS failure with the settings that fix it; a plain-HTTP one is not.
    @Test(arguments: [35, 52, 55, 56])
    func aBrokenTLSConnectionNamesTheClientCertificate(curlCode: Int) {
        let https = GlanceError.transport(message: "Recv failure: Connection reset by peer", method: "GET",
                                          url: "https://127.0.0.1:9292/v2/images", curlCode: curlCode)
        #expect(https.description.contains("TLS") && https.description.contains("client_certificate"))
        let plain = GlanceError.transport(message: "Recv failure: Connection reset by peer", method: "GET",
                                          url: "http://127.0.0.1:9292/v2/images", curlCode: curlCode)
        #expect(!plain.description.contains("client_certificate"))
        let refused = GlanceError.transport(message: "Failed to connect", method: "GET", url: "https://127.0.0.1:1/", curlCode: 7)
        #expect(!refused.description.contains("client_certificate"))
    }
}
