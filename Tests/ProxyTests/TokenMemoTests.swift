import BlobStore
import HTTPCore
import Testing

@testable import Proxy

/// The fingerprint a connection keeps for its last token is reused only for the same bytes.
@Suite struct TokenMemoTests {
    @Test func aKeptFingerprintServesOnlyTheSameBytes() throws {
        var memo = FastPathMemo()
        let precomposed = "tok-\u{E9}"  // é as one scalar
        let decomposed = "tok-e\u{301}"  // e and a combining acute accent: == to the above in Swift
        #expect(precomposed == decomposed, "the pair this test needs: canonically equivalent, different bytes")
        #expect(DepotHandler.TokenMemo.fingerprint(of: precomposed, in: &memo) == SecretFingerprint(precomposed))
        let kept = try #require(memo.value)
        #expect(DepotHandler.TokenMemo.fingerprint(of: precomposed, in: &memo) == SecretFingerprint(precomposed))
        #expect(memo.value === kept, "the same bytes reuse the kept fingerprint")
        #expect(DepotHandler.TokenMemo.fingerprint(of: decomposed, in: &memo) == SecretFingerprint(decomposed), "another token's bytes")
        #expect(memo.value !== kept, "another token's fingerprint replaces the kept one")
        #expect(SecretFingerprint(decomposed) != SecretFingerprint(precomposed))
        #expect(DepotHandler.TokenMemo.fingerprint(of: "other", in: &memo) == SecretFingerprint("other"))
        #expect(DepotHandler.TokenMemo.fingerprint(of: "", in: &memo) == SecretFingerprint(""))
    }
}
