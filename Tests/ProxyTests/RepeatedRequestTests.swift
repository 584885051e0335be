import BlobStore
import Cache
import DepotTestSupport
import Foundation
import Glance
import Synchronization
import Testing

/// A client streaming an image repeats one request head on its connection with another range
/// each time. Depot answers such a request from what the connection's last hit decided
/// (`RepeatedHead`, `DepotHandler.repeatedResponse`), without reading the head into strings or
/// looking the decision up again, and only while `ImageCache.stillKnown` says that decision
/// and the image's blob stand. These tests hold it to the same answers as a request read anew:
/// another token, a changed decision, a decision due for renewal, an evicted blob and an
/// image Glance no longer has are each seen on the very next request of the connection.
@Suite(.serialized) struct RepeatedRequestTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// Until the event loop can answer alice from what it keeps: a decision that is not due
    /// for renewal, and the image's blob known to the resolver (the Catalog has the mapping a
    /// moment before the resolver does).
    static func waitUntilKnown(_ depot: DepotHarness, _ imageID: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let known = depot.cache.knownHit(
                token: GlanceServer.alice, fingerprint: SecretFingerprint(GlanceServer.alice), cloud: "default_RegionOne", imageID: imageID)
            if known?.validity != nil { return }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    @Test func aRepeatedRequestIsAnsweredFromTheConnectionsLastHitOnlyWhileItStands() async throws {
        let skew = Mutex(Duration.zero)
        var settings = CacheSettings.testing
        settings.decisionTTL = .seconds(600)
        settings.decisionClock = DecisionClock { ContinuousClock.now + skew.withLock { $0 } }
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let bytes = pseudoRandomBytes(count: 100_000, seed: 171)
            let alice = glanceAsAlice(glance.url)
            let image = try await uploadImage(alice, bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let client = try await WireClient()
            var next = 0
            /// The next 1,000 bytes on the connection, as `token`.
            func get(_ token: String = GlanceServer.alice) async throws -> (WireClient.Exchange, range: Range<Int>) {
                let range = next..<next + 1000
                next = (next + 1000) % bytes.count
                let answer = try await client.exchange("GET", url, headers: [("X-Auth-Token", token), ("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")])
                return (answer, range)
            }
            /// A hit with the right bytes; whether the request was answered as a repetition.
            func hit(_ note: Comment) async throws -> Bool {
                let repeated = depot.server.repeatedHeadAnswers
                let (answer, range) = try await get()
                #expect(answer.status == 206 && answer.header("x-depot-cache") == "hit" && answer.body == Array(bytes[range]), note)
                return depot.server.repeatedHeadAnswers == repeated + 1
            }
            func waitUntilKnown() async throws { try await Self.waitUntilKnown(depot, image.id) }
            // Cached by the first request; then a first hit on the wire, and its repetitions.
            #expect(try await get().0.status == 206)
            try await waitUntilKnown()
            #expect(try await !hit("the first hit on the wire is read"))
            #expect(try await hit("the next is a repetition"))
            #expect(try await hit("and the next"))

            // Another project's token on the same connection: read anew, and refused as Glance refuses it.
            let (other, _) = try await get(GlanceServer.bob)
            #expect(other.status == 404 && other.body.count < 1000, "bob: \(other.status)")
            #expect(try await !hit("alice again after bob: read anew"))
            #expect(try await hit("then repeated again"))

            // Any decision made (here another token's first) changes what hits rest on.
            let fresh = GlanceServer.alice + ",probe"
            #expect(try await get(fresh).0.status == 206)
            #expect(try await !hit("alice after another token's first decision: read anew"))
            #expect(try await hit("then repeated again"))

            // Due for renewal (past three quarters of the TTL): read anew, which asks Glance again.
            skew.withLock { $0 = .seconds(500) }
            #expect(try await !hit("a decision due for renewal is not repeated"))
            try await waitUntilKnown()
            #expect(try await !hit("the renewed decision: read anew"))
            #expect(try await hit("then repeated again"))

            // An evicted blob: not answered from it.
            let digest = try #require(try depot.cache.cachedBlob(cloud: "default_RegionOne", imageID: image.id))
            _ = try await depot.cache.evict(digest)
            let repeatedBeforeEviction = depot.server.repeatedHeadAnswers
            let (afterEviction, range) = try await get()
            #expect(afterEviction.status == 206 && afterEviction.body == Array(bytes[range]))
            #expect(afterEviction.header("x-depot-cache") != "hit" && depot.server.repeatedHeadAnswers == repeatedBeforeEviction)

            // Deleted in Glance: seen once the decision has expired (the TTL, as for any request).
            try await waitUntilKnown()
            #expect(try await !hit("cached again: read anew"))
            #expect(try await hit("then repeated again"))
            try await alice.deleteImage(image.id)
            skew.withLock { $0 = .seconds(1200) }
            let repeatedBeforeExpiry = depot.server.repeatedHeadAnswers
            let (gone, _) = try await get()
            #expect(gone.status == 404 && depot.server.repeatedHeadAnswers == repeatedBeforeExpiry, "after the decision expired: \(gone.status)")
        }
    }

    /// An image forgotten (what Depot does when another request finds it deleted or
    /// deactivated upstream, or a push of it failed for good) is not answered from a kept hit
    /// on the very next request of a connection, though its blob is still on disk.
    @Test func aForgottenImageIsNotAnsweredFromAKeptHit() async throws {
        try await withDepot(glanceURL: glance.url) { depot in
            let bytes = pseudoRandomBytes(count: 100_000, seed: 172)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let client = try await WireClient()
            func get(_ first: Int) async throws -> WireClient.Exchange {
                try await client.exchange("GET", url, headers: [("X-Auth-Token", GlanceServer.alice), ("Range", "bytes=\(first)-\(first + 99)")])
            }
            #expect(try await get(0).status == 206)
            try await Self.waitUntilKnown(depot, image.id)
            #expect(try await get(100).header("x-depot-cache") == "hit")
            let repeated = depot.server.repeatedHeadAnswers
            #expect(try await get(200).header("x-depot-cache") == "hit")
            #expect(depot.server.repeatedHeadAnswers == repeated + 1, "repeated while it stands")
            await depot.cache.forget(cloud: "default_RegionOne", imageID: image.id)
            let answer = try await get(300)
            #expect(answer.status == 206 && answer.body == Array(bytes[300..<400]))
            #expect(depot.server.repeatedHeadAnswers == repeated + 1, "not repeated once the image was forgotten")
        }
    }
}
