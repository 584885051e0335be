import DepotTestSupport
import Foundation
@testable import Glance
import Testing

/// The client against a real Keystone 30 and a Glance that validates tokens with it.
@Suite(.serialized) struct KeystoneIntegrationTests {
    let keystone: KeystoneServer

    init() async throws { keystone = try await KeystoneServer.shared() }

    func passwordClient(_ name: String, endpoint: String? = nil) throws -> GlanceClient {
        let user = try #require(keystone.users[name])
        let credentials = KeystoneCredentials(
            authURL: keystone.authURL,
            method: .password(
                username: user.username, password: user.password, userDomain: user.user_domain_name,
                project: user.project_name, projectDomain: user.project_domain_name),
            region: keystone.region)
        return GlanceClient(configuration: GlanceClientConfiguration(endpoint: endpoint, credentials: .keystone(credentials)))
    }

    @Test func passwordAuthFindsTheImageEndpointInTheCatalog() async throws {
        let client = try passwordClient("depot")
        let session = try await client.keystone!.current(using: client)
        #expect(session.imageEndpoint == keystone.glanceURL)
        #expect(session.expiresAt.map { $0 > Date() } == true)
        _ = try await client.listImages()
    }

    @Test func applicationCredentialAuthWorks() async throws {
        let credential = keystone.depotApplicationCredential
        let client = GlanceClient(configuration: GlanceClientConfiguration(
            endpoint: nil,
            credentials: .keystone(KeystoneCredentials(
                authURL: keystone.authURL, method: .applicationCredential(id: credential.id, secret: credential.secret)))))
        _ = try await client.listImages()
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        let client = GlanceClient(configuration: GlanceClientConfiguration(
            endpoint: keystone.glanceURL,
            credentials: .keystone(KeystoneCredentials(
                authURL: keystone.authURL,
                method: .password(username: "alice", password: "wrong", userDomain: "Default", project: "projA", projectDomain: "Default")))))
        let error = await #expect(throws: GlanceError.self) { try await client.listImages() }
        guard case .authentication = error else {
            Issue.record("expected an authentication error, got \(String(describing: error))")
            return
        }
        #expect(error?.description.contains("wrong") == false, "errors never carry the password")
    }

    @Test func callerTokensKeepProjectsApart() async throws {
        let alice = try passwordClient("alice")
        let image = try await alice.createImage([
            "name": .string("ks-private"), "disk_format": .string("raw"), "container_format": .string("bare"), "visibility": .string("private"),
        ])
        try await alice.uploadImageData(image.id, from: .bytes(Array("keystone bytes".utf8)))
        let bob = try passwordClient("bob")
        let bobToken = try await bob.keystone!.current(using: bob).token
        let asBob = await #expect(throws: GlanceError.self) { try await alice.showImage(image.id, auth: .token(bobToken)) }
        #expect(asBob?.isNotFound == true)
        #expect(try await alice.showImage(image.id).isActive)
        try await alice.deleteImage(image.id)
    }

    /// The ONAP routes' tenant check: Keystone names a token's project, the same id Glance
    /// records as the owner of what that token creates.
    @Test func aTokensProjectComesFromKeystone() async throws {
        let depot = try passwordClient("depot")
        let alice = try passwordClient("alice")
        let aliceToken = try await alice.keystone!.current(using: alice).token
        let project = try #require(try await depot.tokenProject(aliceToken))
        #expect(project.source == .keystone)
        #expect(project.name == "projA")
        let image = try await alice.createImage(["name": .string("ks-owner"), "disk_format": .string("raw"), "container_format": .string("bare")])
        #expect(image.owner == project.id)
        try await alice.deleteImage(image.id)
        #expect(try await depot.tokenProject("not-a-token") == nil)
    }

    @Test func userTokensAreValidatedWithTheirRoles() async throws {
        // Depot's admin check: a user's token, validated with Depot's own service token.
        let depot = try passwordClient("depot")
        let admin = try passwordClient("admin")
        let alice = try passwordClient("alice")
        let adminToken = try await admin.keystone!.current(using: admin).token
        let aliceToken = try await alice.keystone!.current(using: alice).token
        #expect(try await depot.tokenRoles(adminToken)?.contains("admin") == true)
        let aliceRoles = try await depot.tokenRoles(aliceToken)
        #expect(aliceRoles?.contains("member") == true)
        #expect(aliceRoles?.contains("admin") == false)
        #expect(try await depot.tokenRoles("not-a-token") == [])
        // A cloud without Keystone cannot tell: no roles at all, not an empty set.
        let staticToken = GlanceClient(configuration: GlanceClientConfiguration(endpoint: keystone.glanceURL, credentials: .token(adminToken)))
        #expect(try await staticToken.tokenRoles(aliceToken) == nil)
    }

    @Test func aRevokedServiceTokenIsReplacedOnThe401() async throws {
        let client = try passwordClient("depot")
        _ = try await client.listImages()
        let old = try await client.keystone!.current(using: client).token
        // Revoke it behind the client's back: Keystone lets a token revoke itself.
        let result = try await spawn("/usr/bin/curl", [
            "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE",
            "-H", "X-Auth-Token: \(old)", "-H", "X-Subject-Token: \(old)", keystone.authURL + "/auth/tokens",
        ])
        #expect(result.status == 0, "curl exited \(result.status)")
        #expect(String(decoding: result.stdout, as: UTF8.self) == "204")
        _ = try await client.listImages()
        let new = try await client.keystone!.current(using: client).token
        #expect(new != old)
    }
}
