import BlobStore
import DepotTestSupport
import Foundation
import Glance
import Testing

/// TLS on both sides, with a throwaway CA on loopback: clients reach Depot over HTTPS (hits
/// read from the blob in chunks, since sendfile cannot encrypt), and Depot reaches a Glance
/// that serves HTTPS and asks for a client certificate.
@Suite(.serialized) struct TLSTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func clientsDownloadOverHTTPSFromACacheMissAndHits() async throws {
        let certificates = try await TestCertificates()
        let data = TemporaryDirectory("depot-tls")
        let depot = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
            "--tls-certificate", certificates.serverCertificate, "--tls-key", certificates.serverKey, "--log-level", "warning",
        ])
        defer { Task { await depot.stop() } }
        let base = "https://127.0.0.1:\(depot.port)"
        let bytes = pseudoRandomBytes(count: (12 << 20) + 4321, seed: 81)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let url = "\(base)/v2/images/\(image.id)/file"
        let trust = ["--cacert", certificates.authority]

        let miss = try await curl(url, token: GlanceServer.alice, trust)
        #expect(miss.status == 200)
        #expect(miss.header("x-depot-cache") != "hit")
        #expect(miss.body == bytes)
        let hit = try await curl(url, token: GlanceServer.alice, trust)
        #expect(hit.status == 200)
        #expect(hit.header("x-depot-cache") == "hit")
        #expect(hit.body == bytes, "a hit over TLS is the image, byte for byte")

        let size = bytes.count
        for (range, expected) in [
            ("bytes=100-3999", Array(bytes[100...3999])), ("bytes=-3999", Array(bytes[(size - 3999)...])),
            ("bytes=6000000-", Array(bytes[6_000_000...])),
        ] {
            let partial = try await curl(url, token: GlanceServer.alice, trust + ["-H", "Range: \(range)"])
            #expect(partial.status == 206, "\(range)")
            #expect(partial.body == expected, "\(range)")
        }
        let multi = try await curl(url, token: GlanceServer.alice, trust + ["-H", "Range: bytes=0-9,1048576-2097151"])
        #expect(multi.status == 206)
        #expect(multi.body.count > (1 << 20) + 10)
        #expect(multi.body.firstRange(of: bytes[1_048_576...2_097_151]) != nil, "the second part arrived whole")
        let refused = try await curl(url, token: GlanceServer.alice, trust + ["-H", "Range: bytes=500-100"])
        #expect(refused.status == 416 || refused.status == 200, "a backwards range is ignored or refused, as RFC 9110 allows")

        // A client that does not trust the CA, or trusts another one, gets no connection
        // (curl's 60: the peer's certificate cannot be authenticated).
        #expect(try await curl(url, token: GlanceServer.alice, expectingExit: 60).status == 0)
        #expect(try await curl(url, token: GlanceServer.alice, ["--cacert", certificates.otherAuthority], expectingExit: 60).status == 0)
        // Plain HTTP on the TLS port is not served: the handshake fails and the connection
        // closes without a byte (curl's 52: empty reply).
        let plain = try await curl("http://127.0.0.1:\(depot.port)/v2/images/\(image.id)/file", token: GlanceServer.alice, ["--max-time", "5"], expectingExit: 52)
        #expect(plain.status == 0 && plain.body.isEmpty)
    }

    @Test func depotReachesAGlanceThatServesHTTPSAndWantsAClientCertificate() async throws {
        let certificates = try await TestCertificates()
        let secureGlance = try await GlanceServer.start(tls: certificates, requireClientCertificate: true)
        defer { secureGlance.stop() }
        var owner = GlanceClientConfiguration(endpoint: secureGlance.url, credentials: .token(GlanceServer.alice))
        owner.tls = TLSOptions(caBundle: certificates.authority, clientCertificate: certificates.clientCertificate, clientKey: certificates.clientKey)
        // The test's own setup upload: gunicorn's TLS handshake can take over the default 5 s
        // on a loaded CI machine (curl 28 "SSL connection timeout" seen twice).
        owner.connectTimeout = .seconds(60)
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 82)
        let image = try await uploadImage(GlanceClient(configuration: owner), bytes)

        /// Starts a Depot whose only cloud is the HTTPS Glance, with `tls` lines in its cloud.
        func depot(_ tls: [String]) async throws -> (DepotProcess, TemporaryDirectory) {
            let dir = TemporaryDirectory("depot-backend-tls")
            let config = """
                data_dir: \(dir.path)
                log_level: warning
                clouds:
                  - owner: default
                    region: RegionOne
                    glance_url: \(secureGlance.url)
                    service_token: "\(DepotHarness.serviceToken)"
                \(tls.map { "    " + $0 }.joined(separator: "\n"))
                """
            try config.write(toFile: dir.path + "/depot.yaml", atomically: true, encoding: .utf8)
            return (try await DepotProcess.start(["--config", dir.path + "/depot.yaml"]), dir)
        }

        let (verified, dirA) = try await depot([
            "ca_bundle: \(certificates.authority)", "client_certificate: \(certificates.clientCertificate)",
            "client_key: \(certificates.clientKey)",
        ])
        let good = try await curl("\(verified.url)/v2/images/\(image.id)/file")
        #expect(good.status == 200, "\(String(decoding: good.body.prefix(400), as: UTF8.self))")
        #expect(good.body == bytes, "fetched over TLS with a verified server and a client certificate")
        await verified.stop()
        _ = dirA

        // Without the CA, the server is not trusted; without the client certificate, Glance
        // refuses the handshake. Either way the client learns the backend is unreachable.
        for lines in [
            ["client_certificate: \(certificates.clientCertificate)", "client_key: \(certificates.clientKey)"],
            ["ca_bundle: \(certificates.authority)"],
            ["ca_bundle: \(certificates.otherAuthority)", "client_certificate: \(certificates.clientCertificate)", "client_key: \(certificates.clientKey)"],
        ] {
            let (refused, dir) = try await depot(lines)
            let answer = try await curl("\(refused.url)/v2/images/\(image.id)/file")
            #expect(answer.status == 503 || answer.status == 502, "\(lines): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            #expect(answer.body != bytes)
            let message = String(decoding: answer.body, as: UTF8.self)
            #expect(message.contains("SSL") || message.contains("certificate"), "the message says TLS failed: \(message)")
            await refused.stop()
            _ = dir
        }

        // insecure: true skips the server's verification, and only when asked for.
        let (unverified, dirB) = try await depot([
            "insecure: true", "client_certificate: \(certificates.clientCertificate)", "client_key: \(certificates.clientKey)",
        ])
        let loose = try await curl("\(unverified.url)/v2/images/\(image.id)/file")
        #expect(loose.status == 200 && loose.body == bytes)
        await unverified.stop()
        _ = dirB
    }
}
