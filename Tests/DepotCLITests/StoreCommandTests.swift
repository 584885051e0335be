import BlobStore
import DepotTestSupport
import Foundation
import Testing


struct Outcome {
    let status: Int32
    let stdout: Data
    let stderr: String
    var text: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs `depot` with arguments and optional stdin; waits for it to exit.
func depot(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) async throws -> Outcome {
    let result = try await spawnCollectingErrors(depotExecutable, arguments, stdin: stdin.map { Array($0) } ?? [], environment: environment)
    return Outcome(status: result.status, stdout: Data(result.stdout), stderr: result.stderr)
}

@Suite struct StoreCommandTests {
    let dir = NSTemporaryDirectory() + "depot-cli-\(UUID().uuidString)"

    @Test func versionPrints() async throws {
        let result = try await depot(["--version"])
        #expect(result.status == 0)
        #expect(result.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test func putPrintsTheDigestAndCatGivesTheBytesBack() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        let file = dir + ".input"
        _ = FileManager.default.createFile(atPath: file, contents: bytes)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let put = try await depot(["store", "put", file, "--data-dir", dir])
        #expect(put.status == 0, "\(put.stderr)")
        let digest = Digest.of(Array(bytes), algorithm: .sha256).hex
        #expect(put.text == digest + "\n")

        let cat = try await depot(["store", "cat", digest, "--data-dir", dir])
        #expect(cat.status == 0)
        #expect(cat.stdout == bytes)

        let range = try await depot(["store", "cat", digest, "--range", "100-3999", "--data-dir", dir])
        #expect(range.stdout == bytes[100...3999])
        let inverted = try await depot(["store", "cat", digest, "--range", "500-100", "--data-dir", dir])
        #expect(inverted.status != 0)
        #expect(inverted.stderr.contains("START-END"))

        let fromStdin = try await depot(["store", "put", "-", "--all-digests", "--data-dir", dir], stdin: bytes)
        #expect(fromStdin.text.contains("sha512  " + Digest.of(Array(bytes), algorithm: .sha512).hex))
        #expect(fromStdin.text.contains("md5     " + Digest.of(Array(bytes), algorithm: .md5).hex))
    }

    @Test func badInputGetsAPlainErrorAndANonZeroExit() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let notHex = try await depot(["store", "cat", "xyz", "--data-dir", dir])
        #expect(notHex.status != 0)
        #expect(notHex.stderr.contains("is not a SHA-256 digest"))
        let missing = try await depot(["store", "cat", String(repeating: "0", count: 64), "--data-dir", dir])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no blob"))
        let wrong = try await depot(["store", "put", "-", "--expect-sha256", String(repeating: "0", count: 64), "--data-dir", dir], stdin: Data("x".utf8))
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("content mismatch"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp").isEmpty)
    }

    @Test func verifyExitsOneWhenABlobIsCorrupt() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let put = try await depot(["store", "put", "-", "--data-dir", dir], stdin: Data(repeating: 0x5a, count: 100_000))
        let digest = put.text.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await depot(["store", "verify", "--data-dir", dir]).status == 0)
        let path = "\(dir)/blobs/sha256/\(digest.prefix(2))/\(digest.dropFirst(2).prefix(2))/\(digest)"
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seek(toOffset: 500)
        try handle.write(contentsOf: Data([0x00]))
        try handle.close()
        let verify = try await depot(["store", "verify", "--data-dir", dir])
        #expect(verify.status == 1)
        #expect(verify.text.contains("CORRUPT \(digest)"))
        #expect(try await depot(["store", "verify", "--data-dir", dir]).status == 0, "the corrupt blob was quarantined")
    }

    /// kill -9 in the middle of a write: nothing becomes visible, and the next open cleans up.
    @Test func aWriterKilledMidWriteLeavesNothing() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 5 MiB taken in, and the input left open: the writer is still waiting for more.
        let writer = try await ChildProcess.start(
            [depotExecutable, "store", "put", "-", "--data-dir", dir], stdin: [UInt8](repeating: 1, count: 5 << 20))
        // Wait until the bytes reached the temporary file, then kill without warning.
        let tmp = dir + "/tmp"
        var partial: String?
        for _ in 0..<500 {
            if let name = try? FileManager.default.contentsOfDirectory(atPath: tmp).first,
               let size = try? FileManager.default.attributesOfItem(atPath: "\(tmp)/\(name)")[.size] as? Int, size > 0 {
                partial = name
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(partial != nil, "the writer never wrote its temporary file")
        let status = await writer.stop(signal: SIGKILL)
        #expect(status?.endedBySignal == true, "\(String(describing: status))")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir + "/blobs").filter { $0.count > 10 }.isEmpty)
        // The leftover is still there until the store is opened again, which removes it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp) == [partial!])
        let store = try BlobStore(dataDirectory: dir)
        #expect(store.recovery.removedTemporaryFiles == [partial!])
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
        #expect(try store.allDigests().isEmpty)
    }
}
