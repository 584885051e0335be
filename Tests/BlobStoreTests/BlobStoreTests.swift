@testable import BlobStore
import DepotTestSupport
import Dispatch
import Foundation
import Synchronization
import Testing

@Suite struct BlobStoreTests {
    let dir = TemporaryDirectory()

    func makeStore() throws -> BlobStore { try BlobStore(dataDirectory: dir.path) }

    @Test func layoutIsShardedByTheFirstTwoHexPairs() throws {
        let store = try makeStore()
        let blob = try putBlob(store, Array("abc".utf8))
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        #expect(blob.digest.hex == hex)
        #expect(blob.path == "\(dir.path)/blobs/sha256/ba/78/\(hex)")
        #expect(FileManager.default.fileExists(atPath: blob.path))
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(store.contains(blob.digest))
        #expect(try store.size(of: blob.digest) == 3)
    }

    @Test func committedBlobIsReadOnlyAfterCommitAndNotVisibleBefore() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 300_000, seed: 1)
        let digest = Digest.of(bytes, algorithm: .sha256)
        let writer = try store.makeWriter()
        try writer.write(Array(bytes[..<150_000]))
        #expect(!store.contains(digest))
        #expect(throws: BlobStoreError.notFound(digest)) { try store.open(digest) }
        #expect(dir.files(under: "tmp").count == 1)
        try writer.write(Array(bytes[150_000...]))
        #expect(!store.contains(digest))
        let blob = try writer.commit()
        #expect(blob.digest == digest)
        #expect(try store.read(digest, range: 0..<UInt64(bytes.count)) == bytes)
        #expect(throws: BlobStoreError.writerClosed(path: writer.temporaryPath)) { try writer.write([1]) }
    }

    @Test func computesExtraDigestsInTheSamePass() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 5_000_000, seed: 2)
        let writer = try store.makeWriter(alsoCompute: [.sha512, .md5])
        // Mixed chunk sizes exercise both the serial and the parallel path.
        var offset = 0
        for size in [10, 1 << 20, 4096, 3 << 20, 777] where offset < bytes.count {
            let end = min(offset + size, bytes.count)
            try writer.write(Array(bytes[offset..<end]))
            offset = end
        }
        try writer.write(Array(bytes[offset...]))
        let blob = try writer.commit()
        #expect(blob.digests[.sha256] == Digest.of(bytes, algorithm: .sha256))
        #expect(blob.digests[.sha512] == Digest.of(bytes, algorithm: .sha512))
        #expect(blob.digests[.md5] == Digest.of(bytes, algorithm: .md5))
        #expect(blob.size == 5_000_000)
    }

    @Test func emptyBlobIsAValidBlob() throws {
        let store = try makeStore()
        let blob = try putBlob(store, [])
        #expect(blob.digest.hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(try store.size(of: blob.digest) == 0)
    }

    // MARK: Expectations

    @Test func wrongExpectedDigestCommitsNothingAndSaysWhatArrived() throws {
        let store = try makeStore()
        let bytes = Array("hello".utf8)
        let wrong = Digest.of(Array("world".utf8), algorithm: .sha256)
        let actual = Digest.of(bytes, algorithm: .sha256)
        let error = #expect(throws: BlobStoreError.self) { try putBlob(store, bytes, expecting: .init(sha256: wrong)) }
        #expect(error == .digestMismatch(expected: wrong, actual: actual))
        #expect(error?.description.contains(wrong.hex) == true)
        #expect(error?.description.contains(actual.hex) == true)
        #expect(!store.contains(actual))
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(dir.files(under: "blobs").isEmpty)
    }

    @Test func wrongExpectedSHA512OrMD5CommitsNothing() throws {
        let store = try makeStore()
        let bytes = Array("glance".utf8)
        let otherSHA512 = Digest.of([1], algorithm: .sha512)
        #expect(throws: BlobStoreError.digestMismatch(expected: otherSHA512, actual: Digest.of(bytes, algorithm: .sha512))) {
            try putBlob(store, bytes, expecting: .init(sha512: otherSHA512))
        }
        let otherMD5 = Digest.of([1], algorithm: .md5)
        #expect(throws: BlobStoreError.digestMismatch(expected: otherMD5, actual: Digest.of(bytes, algorithm: .md5))) {
            try putBlob(store, bytes, expecting: .init(md5: otherMD5))
        }
        let right = try putBlob(store, bytes, expecting: .init(size: 6, sha512: Digest.of(bytes, algorithm: .sha512), md5: Digest.of(bytes, algorithm: .md5)))
        #expect(right.digests[.sha512] == Digest.of(bytes, algorithm: .sha512))
        #expect(dir.files(under: "blobs").count == 1)
    }

    @Test func shortBodyFailsAtCommit() throws {
        let store = try makeStore()
        #expect(throws: BlobStoreError.sizeMismatch(expected: 10, actual: 5)) {
            try putBlob(store, [1, 2, 3, 4, 5], expecting: .init(size: 10))
        }
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(dir.files(under: "blobs").isEmpty)
    }

    @Test func longBodyFailsAsSoonAsItOverflows() throws {
        let store = try makeStore()
        let writer = try store.makeWriter(expecting: .init(size: 4))
        try writer.write([1, 2, 3])
        #expect(throws: BlobStoreError.sizeMismatch(expected: 4, actual: 6)) { try writer.write([4, 5, 6]) }
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(throws: BlobStoreError.writerClosed(path: writer.temporaryPath)) { try writer.commit() }
    }

    @Test func aDroppedWriterLeavesNothing() throws {
        let store = try makeStore()
        do {
            let writer = try store.makeWriter()
            try writer.write(pseudoRandomBytes(count: 1000, seed: 3))
        }
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(dir.files(under: "blobs").isEmpty)
    }

    // MARK: Dedupe and concurrency

    @Test func sameContentTwiceKeepsOneBlob() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 200_000, seed: 4)
        let first = try putBlob(store, bytes)
        let inode = try FileManager.default.attributesOfItem(atPath: first.path)[.systemFileNumber] as? UInt64
        let second = try putBlob(store, bytes)
        #expect(!first.deduplicated)
        #expect(second.deduplicated)
        #expect(second.digest == first.digest)
        #expect(try FileManager.default.attributesOfItem(atPath: first.path)[.systemFileNumber] as? UInt64 == inode)
        #expect(dir.files(under: "blobs").count == 1)
        #expect(dir.files(under: "tmp").isEmpty)
    }

    @Test func sixteenConcurrentWritersOfTheSameContentLeaveOneBlob() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 3 << 20, seed: 5)
        let results = Mutex<[Result<CommittedBlob, BlobStoreError>]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            let result = Result { () throws(BlobStoreError) in
                let writer = try store.makeWriter()
                for start in stride(from: 0, to: bytes.count, by: 256 << 10) {
                    try writer.write(Array(bytes[start..<min(start + (256 << 10), bytes.count)]))
                }
                return try writer.commit()
            }
            results.withLock { $0.append(result) }
        }
        let blobs = try results.withLock { try $0.map { try $0.get() } }
        #expect(blobs.count == 16)
        #expect(Set(blobs.map(\.digest)).count == 1)
        #expect(blobs.filter { !$0.deduplicated }.count >= 1)
        #expect(dir.files(under: "blobs").count == 1)
        #expect(dir.files(under: "tmp").isEmpty)
        #expect(try store.read(blobs[0].digest, range: 0..<UInt64(bytes.count)) == bytes)
    }

    @Test func sixteenConcurrentWritersOfDifferentContentLeaveSixteenBlobs() throws {
        let store = try makeStore()
        let inputs = (0..<16).map { pseudoRandomBytes(count: 1 << 20 | $0, seed: 100 + UInt64($0)) }
        let results = Mutex<[Int: CommittedBlob]>([:])
        let failures = Mutex<[BlobStoreError]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            do throws(BlobStoreError) {
                let blob = try putBlob(store, inputs[i])
                results.withLock { $0[i] = blob }
            } catch {
                failures.withLock { $0.append(error) }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        let blobs = results.withLock { $0 }
        #expect(blobs.count == 16)
        for (i, blob) in blobs {
            #expect(blob.digest == Digest.of(inputs[i], algorithm: .sha256))
            #expect(try store.read(blob.digest, range: 0..<blob.size) == inputs[i])
        }
        #expect(Set(try store.allDigests()) == Set(blobs.values.map(\.digest)))
        #expect(dir.files(under: "tmp").isEmpty)
    }

    // MARK: Reads

    @Test func rangeReadsAtTheEdges() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 10_000, seed: 6)
        let digest = try putBlob(store, bytes).digest
        let reader = try store.open(digest)
        #expect(reader.size == 10_000)
        #expect(try reader.read(0..<1) == [bytes[0]])
        #expect(try reader.read(9_999..<10_000) == [bytes[9_999]])
        #expect(try reader.read(0..<10_000) == bytes)
        #expect(try reader.read(100..<4_000) == Array(bytes[100..<4_000]))
        #expect(throws: BlobStoreError.invalidRange(lowerBound: 5, upperBound: 5, size: 10_000)) { try reader.read(5..<5) }
        #expect(throws: BlobStoreError.invalidRange(lowerBound: 9_999, upperBound: 10_001, size: 10_000)) { try reader.read(9_999..<10_001) }
        #expect(throws: BlobStoreError.invalidRange(lowerBound: 10_000, upperBound: 10_001, size: 10_000)) { try reader.read(10_000..<10_001) }
    }

    @Test func chunkedReadsCoverTheRangeExactly() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 3_000_001, seed: 7)
        let reader = try store.open(try putBlob(store, bytes).digest)
        var collected: [UInt8] = []
        try reader.forEachChunk(of: 17..<2_999_999, chunkSize: 65_536) { collected.append(contentsOf: $0) }
        #expect(collected == Array(bytes[17..<2_999_999]))
    }

    @Test func descriptorForZeroCopySendsReadsTheSameBytes() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 4096, seed: 8)
        let reader = try store.open(try putBlob(store, bytes).digest)
        // The event-loop path sends from the reader's own descriptor (borrowed, not dup'd).
        var buffer = [UInt8](repeating: 0, count: 100)
        #expect(pread(reader.fileDescriptor, &buffer, 100, 1000) == 100)
        #expect(buffer == Array(bytes[1000..<1100]))
    }

    @Test func anOpenReaderSurvivesRemoval() throws {
        let store = try makeStore()
        let bytes = pseudoRandomBytes(count: 8192, seed: 9)
        let digest = try putBlob(store, bytes).digest
        let reader = try store.open(digest)
        try store.remove(digest)
        #expect(!store.contains(digest))
        #expect(throws: BlobStoreError.notFound(digest)) { try store.open(digest) }
        #expect(try reader.read(0..<8192) == bytes)
    }

    @Test func blobsAreNamedBySHA256Only() throws {
        let store = try makeStore()
        let md5 = Digest.of([1], algorithm: .md5)
        #expect(throws: BlobStoreError.notABlobName(md5)) { try store.open(md5) }
        #expect(!store.contains(md5))
    }

    // MARK: Verify and recovery

    @Test func verifyFindsAndQuarantinesACorruptBlob() throws {
        let store = try makeStore()
        let good = try putBlob(store, pseudoRandomBytes(count: 50_000, seed: 10))
        let bad = try putBlob(store, pseudoRandomBytes(count: 50_000, seed: 11))
        // Flip one byte in place, as bit rot would.
        let handle = try #require(FileHandle(forUpdatingAtPath: bad.path))
        try handle.seek(toOffset: 25_000)
        let old = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: 25_000)
        try handle.write(contentsOf: [old[0] ^ 0x01])
        try handle.close()

        #expect(try store.verify(good.digest) == nil)
        let report = try store.verifyAll()
        #expect(report.checked == 2)
        #expect(report.corrupt.count == 1)
        let corrupt = try #require(report.corrupt.first)
        #expect(corrupt.digest == bad.digest)
        #expect(corrupt.actual != bad.digest)
        #expect(corrupt.quarantinedAt.hasPrefix(dir.path + "/quarantine/" + bad.digest.hex))
        #expect(!store.contains(bad.digest))
        #expect(FileManager.default.fileExists(atPath: corrupt.quarantinedAt))
        #expect(store.contains(good.digest))
        #expect(try store.verifyAll().corrupt.isEmpty)
    }

    @Test func recoveryRemovesLeftoverTempFilesButNotLiveOnes() throws {
        let store = try makeStore()
        // A crashed writer's leftover: a temp file nobody holds.
        let leftover = dir.path + "/tmp/deadbeef.partial"
        _ = FileManager.default.createFile(atPath: leftover, contents: Data(repeating: 7, count: 12345))
        // A live writer in this process (another process would hold its lock the same way).
        let live = try store.makeWriter()
        try live.write([1, 2, 3])

        let reopened = try makeStore()
        #expect(reopened.recovery.removedTemporaryFiles == ["deadbeef.partial"])
        #expect(reopened.recovery.removedTemporaryBytes == 12345)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(FileManager.default.fileExists(atPath: live.temporaryPath))
        let blob = try live.commit()
        #expect(reopened.contains(blob.digest))
    }

    @Test func strayFilesUnderBlobsAreReportedAndNeverListed() throws {
        let store = try makeStore()
        let blob = try putBlob(store, Array("real".utf8))
        let shard = dir.path + "/blobs/sha256/00/00"
        try FileManager.default.createDirectory(atPath: shard, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: shard + "/not-a-digest", contents: Data([1]))
        // A valid digest in the wrong shard is stray too: the store would never look there.
        _ = FileManager.default.createFile(atPath: shard + "/" + blob.digest.hex, contents: Data([1]))
        let reopened = try BlobStore(dataDirectory: dir.path)
        #expect(Set(reopened.recovery.strayFiles) == [shard + "/not-a-digest", shard + "/" + blob.digest.hex])
        #expect(try reopened.allDigests() == [blob.digest])
        _ = store
    }
}

/// Stores `bytes` as one blob.
func putBlob(_ store: BlobStore, _ bytes: [UInt8], expecting: BlobExpectation = .init()) throws(BlobStoreError) -> CommittedBlob {
    let writer = try store.makeWriter(expecting: expecting)
    try writer.write(bytes)
    return try writer.commit()
}
