import BlobStore
import Catalog
import DepotTestSupport
import Glance
import Testing

@testable import Cache

/// Every change to what `ImageCache.knownHit` reads advances `KnownHitGeneration`, so an
/// answer kept past one hit (`ImageCache.stillKnown`) is never taken as valid after it: each
/// way the blob resolver's mappings and the authorizer's decisions change, one by one. (The
/// decisions Glance's answers make are seen end to end, `RepeatedRequestTests`.)
struct KnownHitGenerationTests {
    static let key = ImageKey(cloud: "c", imageID: "i")

    @Test func everyChangeOfAMappingAdvancesIt() throws {
        let dir = TemporaryDirectory("known-hit-generation")
        let generation = KnownHitGeneration()
        let resolver = BlobResolver(
            store: try BlobStore(dataDirectory: dir.path), catalog: try Catalog(path: dir.path + "/catalog.sqlite"), disk: .shared,
            generation: generation)
        let first = Digest.of(Array("first".utf8), algorithm: .sha256), second = Digest.of(Array("second".utf8), algorithm: .sha256)
        var seen = generation.current
        func advanced(_ what: Comment) {
            #expect(generation.current != seen, what)
            seen = generation.current
        }
        func unchanged(_ what: Comment) { #expect(generation.current == seen, what) }

        resolver.remember(Self.key, first)
        advanced("a new mapping")
        resolver.remember(Self.key, first)
        unchanged("the same mapping again changes nothing")
        resolver.remember(Self.key, second)
        advanced("a mapping to another blob")
        resolver.forget(Self.key)
        advanced("a forgotten image (a push that failed for good leaves its blob on disk)")
        resolver.forget(Self.key)
        unchanged("forgetting what is not there changes nothing")
        resolver.remember(Self.key, first)
        advanced("mapped again")
        resolver.forgetBlob(first)
        advanced("an evicted or quarantined blob")
        #expect(resolver.known(Self.key) == nil)
    }

    @Test func forgettingAnImagesDecisionsAdvancesIt() {
        let generation = KnownHitGeneration()
        let authorizer = Authorizer(clouds: [:], settings: CacheSettings(), generation: generation, logger: .init(label: "test"))
        let before = generation.current
        authorizer.forget(Self.key)
        #expect(generation.current != before, "an image deleted or deactivated upstream")
    }

    /// The full chain a kept answer rests on, in an `ImageCache`: forgetting the image makes
    /// `stillKnown` false for an answer made before.
    @Test func aForgottenImageIsNoLongerStillKnown() async throws {
        let dir = TemporaryDirectory("known-hit-generation-cache")
        let store = try BlobStore(dataDirectory: dir.path)
        let cache = try ImageCache(store: store, catalog: try Catalog(path: dir.path + "/catalog.sqlite"), clouds: [:], defaultCloud: "c")
        let validity = KnownHitValidity(generation: cache.knownHitGeneration.current, until: .seconds(3600))
        #expect(cache.stillKnown(validity))
        #expect(!cache.stillKnown(KnownHitValidity(generation: validity.generation, until: .zero)), "due for renewal")
        await cache.forget(cloud: "c", imageID: "i")
        #expect(!cache.stillKnown(validity), "after the image was forgotten")
    }
}
