import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Dispatch
import Synchronization
import Testing

/// Eviction's removals (the Catalog row, the unlink, the directory fsync) run on the eviction
/// thread the application owns, never on the caller's: a request or the cooperative pool does
/// not wait on the disk, and an upload's commit blocked on a pool thread cannot hold them up.
struct EvictionPoolTests {
    @Test func anEvictionWaitsForTheEvictionThreadNotTheCaller() async throws {
        let dir = TemporaryDirectory("eviction-pool")
        let store = try BlobStore(dataDirectory: dir.path)
        let catalog = try Catalog(path: dir.path + "/catalog.sqlite")
        let writer = try store.makeWriter()
        try writer.write(pseudoRandomBytes(count: 1 << 20, seed: 11))
        let blob = try writer.commit()
        try catalog.recordBlob(blob)
        let pools = DiskPools(requestThreads: 1, backgroundThreads: 1)
        pools.start()
        let cache = try ImageCache(store: store, catalog: catalog, clouds: [:], defaultCloud: "none", disk: pools)

        // Occupy the one eviction thread until the gate opens.
        let gate = DispatchSemaphore(value: 0)
        let occupied = Atomic<Bool>(false)
        let blocker = Task {
            await pools.runEviction {
                occupied.store(true, ordering: .releasing)
                gate.wait()
            }
        }
        while !occupied.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }

        let eviction = Task { try await cache.evict(blob.digest) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(store.contains(blob.digest), "the blob was removed on the caller's thread, not on the eviction thread")
        #expect(try catalog.blob(blob.digest) != nil)

        gate.signal()
        await blocker.value
        #expect(try await eviction.value == blob.size)
        #expect(!store.contains(blob.digest))
        #expect(try catalog.blob(blob.digest) == nil)
        await pools.shutdown()
    }
}
