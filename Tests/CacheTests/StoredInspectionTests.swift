import BlobStore
import Cache
import Catalog
import DepotTestSupport
import FormatInspector
import Testing

/// An instant upload skips the body: Depot inspects the stored blob instead, reading only the
/// parts the inspection wants, and must reach the inspection the streamed bytes would give.
struct StoredInspectionTests {
    func store(_ bytes: [UInt8], in cache: ImageCache) throws -> Digest {
        let writer = try cache.store.makeWriter()
        try writer.write(bytes)
        return try writer.commit().digest
    }

    func streamed(_ bytes: [UInt8]) -> Inspection {
        var inspector = FormatInspector()
        inspector.feed(bytes)
        return inspector.finish()
    }

    @Test func aStoredBlobIsInspectedAsItsUploadWouldBe() async throws {
        let dir = TemporaryDirectory("stored-inspection")
        let cache = try ImageCache(
            store: try BlobStore(dataDirectory: dir.path), catalog: try Catalog(path: dir.path + "/catalog.sqlite"), clouds: [:], defaultCloud: "none")
        // A qcow2 header with a backing file, 3 MiB long: the verdict is in the first sector.
        var qcow2 = pseudoRandomBytes(count: 3 << 20, seed: 5)
        qcow2.replaceSubrange(0..<512, with: [UInt8](repeating: 0, count: 512))
        qcow2.replaceSubrange(0..<8, with: [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])
        qcow2[15] = 0x40
        // A VMDK header whose footer (grain directory at the end) sits in the last 1536 bytes.
        var vmdk = [UInt8](repeating: 0, count: 5 << 20)
        vmdk.replaceSubrange(0..<4, with: Array("KDMV".utf8))
        vmdk[4] = 3
        vmdk[28] = 1
        vmdk[36] = 1
        for i in 56..<64 { vmdk[i] = 0xFF }
        let descriptor = Array("createType=\"streamOptimized\"\nRW 8 SPARSE \"x\"\n".utf8)
        vmdk.replaceSubrange(512..<(512 + descriptor.count), with: descriptor)
        vmdk.replaceSubrange((vmdk.count - 1024)..<(vmdk.count - 960), with: vmdk[0..<64])
        for sample in [pseudoRandomBytes(count: 3 << 20, seed: 4), qcow2, vmdk] {
            let stored = try await cache.uploads.inspectStored(try store(sample, in: cache))
            #expect(stored == streamed(sample))
        }
        let unsafe = try await cache.uploads.inspectStored(try store(qcow2, in: cache))
        #expect(unsafe.facts("qcow2")?.failedChecks.map(\.check) == ["backing_file"])
        #expect(try await cache.uploads.inspectStored(try store(vmdk, in: cache)).facts("vmdk")?.complete == true)
    }
}
