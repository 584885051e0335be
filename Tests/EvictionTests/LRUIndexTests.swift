import BlobStore
import Eviction
import Testing

@Suite struct LRUIndexTests {
    func digest(_ n: Int) -> Digest { Digest.of(Array("blob \(n)".utf8), algorithm: .sha256) }

    @Test func orderFollowsUseAndBytesAreExact() {
        var index = LRUIndex()
        for n in 0..<5 { index.touch(digest(n), size: UInt64(100 * (n + 1))) }
        #expect(index.totalBytes == 1500)
        #expect(index.order == (0..<5).map(digest))
        index.touch(digest(0))
        index.touch(digest(2))
        #expect(index.order == [1, 3, 4, 0, 2].map(digest))
        #expect(index.remove(digest(3)) == 400)
        #expect(index.totalBytes == 1100)
        #expect(index.order == [1, 4, 0, 2].map(digest))
        index.touch(digest(9), size: 7)
        #expect(index.order.last == digest(9))
        #expect(index.count == 5)
        let touchedUnknown = index.touch(digest(42))
        #expect(!touchedUnknown)
    }

    @Test func aTouchForASizeMovesOnlyABlobOfThatSize() {
        var index = LRUIndex()
        for n in 0..<3 { index.touch(digest(n), size: 100) }
        let otherSize = index.touch(digest(0), ifSize: 99)
        #expect(!otherSize, "another size: not this blob's bytes")
        let unknown = index.touch(digest(7), ifSize: 100)
        #expect(!unknown, "not in the index")
        #expect(index.order == (0..<3).map(digest), "a refused touch moves nothing")
        let touched = index.touch(digest(0), ifSize: 100)
        #expect(touched)
        #expect(index.order == [1, 2, 0].map(digest) && index.totalBytes == 300)
    }

    @Test func victimsAreLeastRecentlyUsedAndSkipWhatMustStay() {
        var index = LRUIndex()
        for n in 0..<10 { index.touch(digest(n), size: 150) }
        index.touch(digest(0))
        let pinned: Set<Digest> = [digest(1), digest(3)]
        let victims = index.victims(toFree: 400) { pinned.contains($0) }
        #expect(victims.map(\.digest) == [2, 4, 5].map(digest))
        #expect(victims.reduce(0) { $0 + $1.size } == 450)
        #expect(index.victims(toFree: 10_000) { _ in true }.isEmpty)
    }

    /// The scenario of the eviction issue at the index level: a 1 GiB budget and 150 MiB images.
    @Test func tenImagesInAOneGibibyteBudget() {
        let mib: UInt64 = 1 << 20
        let marks = Watermarks(budget: 1024 * mib)
        var index = LRUIndex()
        var evicted: [Int] = []
        for n in 0..<10 {
            if n == 5 { index.touch(digest(0)) }   // image 0 is used again
            let free = marks.bytesToFree(used: index.totalBytes, incoming: 150 * mib)
            for victim in index.victims(toFree: free) {
                index.remove(victim.digest)
                evicted.append((0..<10).first { digest($0) == victim.digest }!)
            }
            index.touch(digest(n), size: 150 * mib)
            #expect(index.totalBytes <= 1024 * mib)
        }
        // High mark 972.8 MiB, low 870.4 MiB: the 7th and 9th images each push past the high
        // mark and free the two least recently used; image 0, used again, stays.
        #expect(evicted == [1, 2, 3, 4])
        #expect(index.contains(digest(0)))
        #expect(index.totalBytes == 900 * mib)
    }

    @Test func watermarks() {
        let marks = Watermarks(budget: 1000, high: 0.9, low: 0.5)
        #expect(marks.bytesToFree(used: 800) == 0)
        #expect(marks.bytesToFree(used: 800, incoming: 150) == 450)
        #expect(marks.fits(incoming: 300, unevictable: 700))
        #expect(!marks.fits(incoming: 301, unevictable: 700))
    }

    @Test func aMillionBlobs() {
        var index = LRUIndex()
        let digests = (0..<1_000_000).map { n -> Digest in
            var bytes = [UInt8](repeating: 0, count: 32)
            withUnsafeBytes(of: UInt64(n)) { for i in 0..<8 { bytes[i] = $0[i] } }
            return Digest(algorithm: .sha256, bytes: bytes)
        }
        for d in digests { index.touch(d, size: 1) }
        for d in digests.prefix(1000) { index.touch(d) }
        #expect(index.count == 1_000_000)
        #expect(index.victims(toFree: 3).map(\.digest) == Array(digests[1000..<1003]))
    }
}
