import BlobStore
import DepotTestSupport
import Foundation
import Glance
import Testing

/// The client against a real Glance 33 on loopback: no mocks.
@Suite(.serialized) struct GlanceClientIntegrationTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    @Test func uploadShowDownloadRangesAndDelete() async throws {
        let client = makeClient(glance.url)
        let bytes = pseudoRandomBytes(count: 64 << 20, seed: 64)
        let file = TemporaryDirectory()
        let path = file.path + "/image.raw"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))

        let created = try await createRawImage(client)
        #expect(created.status == "queued")
        try await client.uploadImageData(created.id, from: .file(path: path))

        let image = try await client.showImage(created.id)
        #expect(image.isActive)
        #expect(image.size == UInt64(bytes.count))
        #expect(image.checksum == Digest.of(bytes, algorithm: .md5).hex)
        #expect(image.osHashAlgo == "sha512")
        #expect(image.osHashValue == Digest.of(bytes, algorithm: .sha512).hex)
        #expect(image["disk_format"] == .string("raw"))
        #expect(image.properties["virtual_size"] != nil, "unknown properties are kept")

        let whole = try await client.openDownload(imageID: image.id)
        #expect(whole.head.status == 200)
        #expect(whole.head.totalSize == UInt64(bytes.count))
        #expect(whole.head.contentMD5 == image.checksum)
        let all = try await drain(whole)
        #expect(all.count == UInt64(bytes.count))
        #expect(all.sha512.hex == image.osHashValue)

        let size = UInt64(bytes.count)
        for range: ClosedRange<UInt64> in [0...0, 100...3999, (size - 4000)...(size - 1), (32 << 20)...((33 << 20) - 1)] {
            let part = try await client.openDownload(imageID: image.id, range: range)
            #expect(part.head.status == 206)
            #expect(part.head.range == range)
            #expect(part.head.totalSize == size)
            let got = try await drain(part, keep: true)
            #expect(got.bytes == Array(bytes[Int(range.lowerBound)...Int(range.upperBound)]), "range \(range)")
        }

        // The sink variant runs on the transfer thread.
        let collected = Box()
        let head = try await client.download(imageID: image.id, range: 10...19) { buffer in
            collected.append(buffer)
        }
        #expect(head.status == 206)
        #expect(collected.bytes == Array(bytes[10...19]))

        // A sink that asks for batches of 1 MiB gets at least that many bytes between two
        // asks, however Glance's chunks fall, and the rest at the end; the bytes are unchanged.
        let batched = BatchLog()
        _ = try await client.download(imageID: image.id, batch: { batched.nextBatch(wanting: 1 << 20) }) { buffer in
            batched.append(buffer)
        }
        #expect(batched.total == size)
        #expect(batched.sizes.dropLast().allSatisfy { $0 >= 1 << 20 }, "batches: \(batched.sizes)")
        #expect(batched.sizes.count <= 64)
        #expect(batched.sha512.hex == image.osHashValue)

        try await client.deleteImage(image.id)
        let gone = await #expect(throws: GlanceError.self) { try await client.showImage(image.id) }
        #expect(gone?.isNotFound == true)
    }

    @Test func importThroughGlanceDirectFromAStream() async throws {
        let client = makeClient(glance.url)
        let bytes = pseudoRandomBytes(count: 8 << 20, seed: 8)
        let image = try await createRawImage(client)
        let chunks = AsyncStream<[UInt8]> { continuation in
            for start in stride(from: 0, to: bytes.count, by: 300_000) {
                continuation.yield(Array(bytes[start..<min(start + 300_000, bytes.count)]))
            }
            continuation.finish()
        }
        try await client.stageImageData(image.id, from: .stream(length: nil, chunks: chunks))
        #expect(try await client.showImage(image.id).status == "uploading")
        try await client.importImage(image.id, method: "glance-direct")
        var current = try await client.showImage(image.id)
        let deadline = ContinuousClock.now + .seconds(60)
        while !current.isActive && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            current = try await client.showImage(image.id)
        }
        #expect(current.isActive)
        #expect(current.osHashValue == Digest.of(bytes, algorithm: .sha512).hex)
        #expect(current.size == UInt64(bytes.count))
        try await client.deleteImage(image.id)
    }

    @Test func listFollowsPaginationOverTwentyFiveImages() async throws {
        let client = makeClient(glance.url)
        let run = UUID().uuidString
        var ids: Set<String> = []
        for i in 0..<25 {
            ids.insert(try await createRawImage(client, name: "page-\(i)", extra: ["depot_test_run": .string(run)]).id)
        }
        let listed = try await client.listImages(filters: [("depot_test_run", run)], pageSize: 10)
        #expect(listed.count == 25)
        #expect(Set(listed.map(\.id)) == ids)
        #expect(listed.allSatisfy { $0["depot_test_run"] == .string(run) })
        let patched = try await client.updateImage(listed[0].id, [.add("depot_note", .string("patched")), .replace("name", .string("renamed"))])
        #expect(patched.name == "renamed")
        #expect(patched["depot_note"] == .string("patched"))
        for id in ids { try await client.deleteImage(id) }
        #expect(try await client.listImages(filters: [("depot_test_run", run)]).isEmpty)
    }

    @Test func anotherProjectGets404OnAPrivateImage() async throws {
        let alice = makeClient(glance.url)
        let image = try await createActiveImage(alice, bytes: Array("private bytes".utf8))
        let bob = makeClient(glance.url, token: GlanceServer.bob)
        let show = await #expect(throws: GlanceError.self) { try await bob.showImage(image.id) }
        #expect(show?.isNotFound == true)
        let download = await #expect(throws: GlanceError.self) { try await bob.openDownload(imageID: image.id) }
        #expect(download?.isNotFound == true)
        // The caller's own token, passed per request, decides, not the client's service token.
        let asBob = await #expect(throws: GlanceError.self) { try await alice.showImage(image.id, auth: .token(GlanceServer.bob)) }
        #expect(asBob?.isNotFound == true)
        #expect(try await bob.showImage(image.id, auth: .token(GlanceServer.alice)).id == image.id)
        try await alice.deleteImage(image.id)
    }

    @Test func aBadTokenIsATypedUnauthorizedError() async throws {
        let client = makeClient(glance.url, token: "not-a-valid-token")
        let error = await #expect(throws: GlanceError.self) { try await client.listImages() }
        #expect(error?.isUnauthorized == true)
        #expect(error?.description.contains("not-a-valid-token") == false, "errors never carry the token")
        #expect(error?.description.contains("/v2/images") == true)
    }

    @Test func invalidIdsCannotEscapeTheirPathSegment() async throws {
        let client = makeClient(glance.url)
        let error = await #expect(throws: GlanceError.self) { try await client.showImage("../../versions") }
        #expect(error?.isNotFound == true)
    }

    @Test func connectionRefusedIsATransientTransportError() async throws {
        let client = makeClient("http://127.0.0.1:9", token: GlanceServer.alice) { $0.maxRetries = 1 }
        let error = await #expect(throws: GlanceError.self) { try await client.showImage("x") }
        guard case .transport = error else {
            Issue.record("expected a transport error, got \(String(describing: error))")
            return
        }
        #expect(error?.isTransient == true)
    }
}

/// The bytes a batched download handed its sink, grouped by the batch they came in (a batch
/// ends when the download asks for the next).
final class BatchLog: @unchecked Sendable {
    private let lock = NSLock()
    private var finished: [Int] = []
    private var current = 0
    private let hasher = DigestHasher(.sha512)

    /// Batch sizes in bytes, the one still open last.
    var sizes: [Int] { lock.withLock { current > 0 ? finished + [current] : finished } }
    var total: UInt64 { UInt64(sizes.reduce(0, +)) }
    var sha512: Digest { lock.withLock { hasher.finish() } }

    func nextBatch(wanting bytes: Int) -> Int {
        lock.withLock {
            if current > 0 { finished.append(current) }
            current = 0
        }
        return bytes
    }

    func append(_ buffer: UnsafeRawBufferPointer) {
        lock.withLock {
            current += buffer.count
            hasher.update(buffer)
        }
    }
}

/// Collects bytes from a transfer thread.
final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [UInt8] = []
    var bytes: [UInt8] { lock.withLock { stored } }
    func append(_ buffer: UnsafeRawBufferPointer) { lock.withLock { stored += buffer } }
}
