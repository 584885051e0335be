import BlobStore
import Cache
import DepotTestSupport
import Foundation
import Glance
import Testing

/// A data directory on a real, small filesystem that something else fills up: fills and
/// uploads are refused with 507 and leave nothing, cached images are still served, and all
/// works again once space is freed.
@Suite(.enabled(if: rootTestsEnabled, "mounting a tmpfs needs root; CI=true runs it anyway, to fail"), .serialized)
struct FullDiskTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// Writes a file until the filesystem refuses (ENOSPC); returns its size.
    static func fillUp(_ path: String) throws -> Int {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CommandFailed(command: "open \(path)", status: errno) }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5a, count: 64 << 10)
        var written = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                written += n
                continue
            }
            guard errno == ENOSPC else { throw CommandFailed(command: "write \(path)", status: errno) }
            // Then byte by byte, so not even a page is left.
            var one: UInt8 = 0
            while write(fd, &one, 1) == 1 { written += 1 }
            return written
        }
    }

    func message(_ result: CurlResult) -> String {
        let object = try? JSONSerialization.jsonObject(with: Data(result.body)) as? [String: Any]
        return ((object?["error"] as? [String: Any])?["message"] as? String) ?? ""
    }

    @Test func aFullDiskRefusesFillsAndUploadsWith507KeepsServingHitsAndRecovers() async throws {
        let disk = TemporaryDirectory("depot-full-disk")
        try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", disk.path])
        defer { unmount(disk.path) }
        try await withDepot(glanceURL: glance.url, directory: disk) { depot in
            let client = glanceAsAlice(glance.url)
            let cachedBytes = pseudoRandomBytes(count: 6 << 20, seed: 91)
            let coldBytes = pseudoRandomBytes(count: 8 << 20, seed: 92)
            let cached = try await uploadImage(client, cachedBytes)
            let cold = try await uploadImage(client, coldBytes)
            let cachedURL = "\(depot.url)/v2/images/\(cached.id)/file", coldURL = "\(depot.url)/v2/images/\(cold.id)/file"
            #expect(try await curl(cachedURL).body == cachedBytes)

            // Another program fills the filesystem to the last byte.
            let ballast = disk.path + "/ballast"
            let filled = try Self.fillUp(ballast)
            #expect(filled > 30 << 20)

            let refusedFill = try await curl(coldURL)
            #expect(refusedFill.status == 507)
            #expect(refusedFill.header("content-type") == "application/json")
            #expect(message(refusedFill).contains("no room"), "the message says what is wrong: \(message(refusedFill))")
            let upload = try await createImage(depot.url)
            let uploadBytes = pseudoRandomBytes(count: 2 << 20, seed: 93)
            let uploadFile = TemporaryDirectory("depot-full-disk-upload")
            try Data(uploadBytes).write(to: URL(fileURLWithPath: uploadFile.path + "/image.raw"))
            let uploadURL = "\(depot.url)/v2/images/\(upload.id)/file"
            let refusedUpload = try await curl(uploadURL, ["-X", "PUT", "-T", uploadFile.path + "/image.raw"])
            #expect(refusedUpload.status == 507)
            #expect(message(refusedUpload).contains("disk is full"))
            let refusedChunked = try await curl(uploadURL, ["-X", "PUT", "-T", uploadFile.path + "/image.raw", "-H", "Transfer-Encoding: chunked"])
            #expect(refusedChunked.status == 507)

            // Nothing half-written, and what was cached is still served, whole and in ranges.
            #expect(depot.dir.files(under: "tmp").isEmpty)
            #expect(try depot.store.allDigests() == [Digest.of(cachedBytes, algorithm: .sha256)])
            let hit = try await curl(cachedURL)
            #expect(hit.status == 200 && hit.header("x-depot-cache") == "hit" && hit.body == cachedBytes)
            let range = try await curl(cachedURL, ["-H", "Range: bytes=100-3999"])
            #expect(range.status == 206 && range.body == Array(cachedBytes[100...3999]))
            #expect(try await curl("\(depot.url)/healthz", token: nil).status == 200)

            // Space freed: the refused fill and upload work.
            try FileManager.default.removeItem(atPath: ballast)
            let filledNow = try await curl(coldURL)
            #expect(filledNow.status == 200 && filledNow.body == coldBytes)
            #expect(try await curl(coldURL).header("x-depot-cache") == "hit")
            #expect(try await curl(uploadURL, ["-X", "PUT", "-T", uploadFile.path + "/image.raw"]).status == 204)
            #expect(try await depot.settledPush(upload.id).state == .done)
            try await expectGlanceHolds(glance.url, upload.id, bytesOf: uploadFile.path + "/image.raw")
            #expect(try await curl(uploadURL).body == uploadBytes)
        }
    }
}
