@testable import BlobStore
import DepotTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// The readers `BlobStore.openKept` keeps open between hits: bounded, dropped (and closed once
/// unused) on eviction, removal and quarantine, and never a stale view of the file at the path.
@Suite struct OpenBlobCacheTests {
    let dir = TemporaryDirectory()

    /// A kept reader's descriptor and the file it has open, with the caller's reference let go.
    func keptDescriptor(_ store: BlobStore, _ digest: Digest) throws -> OpenFile {
        let reader = try store.openKept(digest)
        var st = stat()
        #expect(fstat(reader.fileDescriptor, &st) == 0)
        return OpenFile(fd: reader.fileDescriptor, device: st.st_dev, inode: st.st_ino)
    }

    /// Whether the descriptor is still open on its file. Judged by the file, not the number:
    /// suites run in parallel, and a closed number is soon another test's descriptor.
    func isOpen(_ file: OpenFile) -> Bool {
        var st = stat()
        return fstat(file.fd, &st) == 0 && st.st_dev == file.device && st.st_ino == file.inode
    }

    @Test func aSecondOpenReusesTheDescriptorAndTheLeastRecentlyUsedIsClosedPastTheLimit() throws {
        let store = try BlobStore(dataDirectory: dir.path, openBlobLimit: 2)
        let blobs = try (0..<3).map { try putBlob(store, pseudoRandomBytes(count: 5000, seed: UInt64(900 + $0))) }
        let first = try keptDescriptor(store, blobs[0].digest)
        #expect(try keptDescriptor(store, blobs[0].digest).fd == first.fd)
        let second = try keptDescriptor(store, blobs[1].digest)
        _ = try keptDescriptor(store, blobs[0].digest)  // the second is now the least recent
        _ = try keptDescriptor(store, blobs[2].digest)
        #expect(store.openBlobs.count == 2)
        #expect(!store.openBlobs.contains(blobs[1].digest))
        #expect(!isOpen(second), "an evicted reader nobody holds closes its descriptor")
        #expect(isOpen(first))
    }

    @Test func aReaderInUseStaysOpenAfterItsEntryIsDroppedAndClosesWhenLetGo() throws {
        let store = try BlobStore(dataDirectory: dir.path, openBlobLimit: 1)
        let bytes = pseudoRandomBytes(count: 5000, seed: 910)
        let blobs = try [bytes, pseudoRandomBytes(count: 5000, seed: 911)].map { try putBlob(store, $0) }
        var inFlight: BlobReader? = try store.openKept(blobs[0].digest)
        let fd = try keptDescriptor(store, blobs[0].digest)
        _ = try store.openKept(blobs[1].digest)
        #expect(!store.openBlobs.contains(blobs[0].digest))
        #expect(isOpen(fd), "a send in flight keeps its descriptor")
        #expect(try inFlight!.read(0..<5000) == bytes)
        inFlight = nil
        #expect(!isOpen(fd))
    }

    @Test func quarantineAndRemovalCloseTheKeptDescriptor() throws {
        let store = try BlobStore(dataDirectory: dir.path)
        let rotten = try putBlob(store, pseudoRandomBytes(count: 5000, seed: 920))
        let evicted = try putBlob(store, pseudoRandomBytes(count: 5000, seed: 921))
        let rottenFD = try keptDescriptor(store, rotten.digest)
        let evictedFD = try keptDescriptor(store, evicted.digest)
        try store.quarantine(rotten.digest)
        #expect(!isOpen(rottenFD), "quarantine closes the kept descriptor")
        #expect(throws: BlobStoreError.notFound(rotten.digest)) { try store.openKept(rotten.digest) }
        try store.remove(evicted.digest)
        #expect(!isOpen(evictedFD), "eviction closes the kept descriptor")
        #expect(throws: BlobStoreError.notFound(evicted.digest)) { try store.openKept(evicted.digest) }
        #expect(store.openBlobs.count == 0)
    }

    @Test func aBlobReplacedTruncatedOrRemovedOnDiskIsNotServedFromTheStaleDescriptor() throws {
        let store = try BlobStore(dataDirectory: dir.path)
        let bytes = pseudoRandomBytes(count: 5000, seed: 930)
        let blob = try putBlob(store, bytes)
        #expect(try store.openKept(blob.digest).read(0..<5000) == bytes)

        // Another file of the same size renamed over the blob's path (a new inode).
        let other = pseudoRandomBytes(count: 5000, seed: 931)
        let replacement = dir.path + "/replacement"
        #expect(FileManager.default.createFile(atPath: replacement, contents: Data(other)))
        #expect(rename(replacement, blob.path) == 0)
        #expect(try store.openKept(blob.digest).read(0..<5000) == other, "the file now at the path, not the kept descriptor's")

        // Truncated in place (the same inode): the reader reports the size the file has now.
        #expect(truncate(blob.path, 4000) == 0)
        #expect(try store.openKept(blob.digest).size == 4000)

        // Removed from outside the store while its reader is kept: not found, and not kept.
        #expect(store.openBlobs.contains(blob.digest))
        #expect(unlink(blob.path) == 0)
        #expect(throws: BlobStoreError.notFound(blob.digest)) { try store.openKept(blob.digest) }
        #expect(!store.openBlobs.contains(blob.digest))
    }

    /// A quarantine that moves a blob away between a miss's `open` and the keeping of its
    /// reader drops the entry before and after the move, both before the insert. The reader is
    /// not kept then: a hit's `fstat` cannot tell a moved file from one still in place, and the
    /// quarantined bytes would be served after a fresh copy came back to the path.
    @Test func aBlobMovedAwayWhileItWasBeingOpenedIsNotKept() throws {
        let store = try BlobStore(dataDirectory: dir.path)
        let bytes = pseudoRandomBytes(count: 5000, seed: 940)
        let blob = try putBlob(store, bytes)
        let moved = dir.path + "/moved"
        let cache = Mutex<OpenBlobCache?>(nil)
        let openBlobs = OpenBlobCache(capacity: 4) { digest in
            // What `BlobStore.quarantine` does, in that window.
            cache.withLock { $0 }?.remove(digest)
            #expect(rename(blob.path, moved) == 0)
            cache.withLock { $0 }?.remove(digest)
        }
        cache.withLock { $0 = openBlobs }
        let reader = try openBlobs.reader(for: blob.digest) { blob.path }
        #expect(try reader.read(0..<5000) == bytes, "the send under way reads the file it opened")
        #expect(!openBlobs.contains(blob.digest), "a file that left its path is not kept")
        cache.withLock { $0 = nil }
    }
}

struct OpenFile {
    let fd: Int32
    let device: UInt
    let inode: UInt
}
