import BlobStore
import DepotTestSupport
import Foundation
import Testing

@Suite struct LargeBlobTests {
    /// A 1 GiB blob's digests agree with `openssl dgst` over the committed file.
    @Test func oneGibibyteMatchesOpenSSL() async throws {
        let dir = TemporaryDirectory()
        let store = try BlobStore(dataDirectory: dir.path)
        let writer = try store.makeWriter(expecting: .init(size: 1 << 30), alsoCompute: [.sha512, .md5])
        var block = pseudoRandomBytes(count: 1 << 20, seed: 42)
        for i in 0..<1024 {
            // Every MiB differs, so a skipped or repeated block changes the digest.
            withUnsafeBytes(of: UInt64(i)) { index in
                for j in 0..<8 { block[j] = index[j] }
            }
            try writer.write(block)
        }
        let blob = try writer.commit()
        #expect(blob.size == 1 << 30)
        for algorithm in DigestAlgorithm.allCases {
            let line = try await run("/usr/bin/openssl", ["dgst", "-r", "-\(algorithm.rawValue)", blob.path])
            #expect(line.split(separator: " ").first.map(String.init) == blob.digests[algorithm]?.hex)
        }
        #expect(try store.verify(blob.digest) == nil)
    }
}
