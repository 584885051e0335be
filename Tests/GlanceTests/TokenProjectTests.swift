import DepotTestSupport
import Foundation
@testable import Glance
import Testing

/// A token's project without Keystone: the owner Glance gives an image the token creates.
@Suite(.serialized) struct TokenProjectTests {
    @Test func withoutKeystoneTheProjectIsTheOwnerOfAProbeImageThatIsDeletedAgain() async throws {
        let glance = try await GlanceServer.shared()
        let client = makeClient(glance.url, token: GlanceServer.admin)
        let project = try #require(try await client.tokenProject(GlanceServer.bob))
        #expect(project == TokenProject(id: "projB", name: nil, source: .glanceImageOwner))
        // No probe is left behind (Glance lists deleted images to no one).
        let left = try await client.listImages(filters: [("name", "depot-project-probe")], auth: .token(GlanceServer.bob))
        #expect(left.isEmpty, "\(left.map(\.id))")
    }

    @Test func aTokenThatMayNotCreateImagesCannotBeMatchedToAProject() async throws {
        let glance = try await GlanceServer.shared()
        let client = makeClient(glance.url, token: GlanceServer.admin)
        let error = await #expect(throws: GlanceError.self) { try await client.tokenProject("carol:projC:reader") }
        #expect(error?.status == 403)
    }
}
