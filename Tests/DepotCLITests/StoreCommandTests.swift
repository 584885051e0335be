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
func depot(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: depotExecutable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    // stderr goes to a file: two pipes read one after the other can deadlock the child.
    let errPath = NSTemporaryDirectory() + "depot-stderr-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: errPath) }
    let out = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let errText = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return Outcome(status: process.terminationStatus, stdout: outData, stderr: errText)
}

@Suite struct StoreCommandTests {
    let dir = NSTemporaryDirectory() + "depot-cli-\(UUID().uuidString)"

    @Test func versionPrints() throws {
        let result = try depot(["--version"])
        #expect(result.status == 0)
        #expect(result.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test func putPrintsTheDigestAndCatGivesTheBytesBack() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        let file = dir + ".input"
        _ = FileManager.default.createFile(atPath: file, contents: bytes)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let put = try depot(["store", "put", file, "--data-dir", dir])
        #expect(put.status == 0, "\(put.stderr)")
        let digest = Digest.of(Array(bytes), algorithm: .sha256).hex
        #expect(put.text == digest + "\n")

        let cat = try depot(["store", "cat", digest, "--data-dir", dir])
        #expect(cat.status == 0)
        #expect(cat.stdout == bytes)

        let range = try depot(["store", "cat", digest, "--range", "100-3999", "--data-dir", dir])
        #expect(range.stdout == bytes[100...3999])
        let inverted = try depot(["store", "cat", digest, "--range", "500-100", "--data-dir", dir])
        #expect(inverted.status != 0)
        #expect(inverted.stderr.contains("START-END"))

        let fromStdin = try depot(["store", "put", "-", "--all-digests", "--data-dir", dir], stdin: bytes)
        #expect(fromStdin.text.contains("sha512  " + Digest.of(Array(bytes), algorithm: .sha512).hex))
        #expect(fromStdin.text.contains("md5     " + Digest.of(Array(bytes), algorithm: .md5).hex))
    }

    @Test func badInputGetsAPlainErrorAndANonZeroExit() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let notHex = try depot(["store", "cat", "xyz", "--data-dir", dir])
        #expect(notHex.status != 0)
        #expect(notHex.stderr.contains("is not a SHA-256 digest"))
        let missing = try depot(["store", "cat", String(repeating: "0", count: 64), "--data-dir", dir])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no blob"))
        let wrong = try depot(["store", "put", "-", "--expect-sha256", String(repeating: "0", count: 64), "--data-dir", dir], stdin: Data("x".utf8))
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("content mismatch"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp").isEmpty)
    }

    @Test func verifyExitsOneWhenABlobIsCorrupt() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let put = try depot(["store", "put", "-", "--data-dir", dir], stdin: Data(repeating: 0x5a, count: 100_000))
        let digest = put.text.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try depot(["store", "verify", "--data-dir", dir]).status == 0)
        let path = "\(dir)/blobs/sha256/\(digest.prefix(2))/\(digest.dropFirst(2).prefix(2))/\(digest)"
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seek(toOffset: 500)
        try handle.write(contentsOf: Data([0x00]))
        try handle.close()
        let verify = try depot(["store", "verify", "--data-dir", dir])
        #expect(verify.status == 1)
        #expect(verify.text.contains("CORRUPT \(digest)"))
        #expect(try depot(["store", "verify", "--data-dir", dir]).status == 0, "the corrupt blob was quarantined")
    }

    /// kill -9 in the middle of a write: nothing becomes visible, and the next open cleans up.
    @Test func aWriterKilledMidWriteLeavesNothing() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: depotExecutable)
        process.arguments = ["store", "put", "-", "--data-dir", dir]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        input.fileHandleForWriting.write(Data(repeating: 1, count: 5 << 20))
        // Wait until the bytes reached the temporary file, then kill without warning.
        let tmp = dir + "/tmp"
        var partial: String?
        for _ in 0..<500 {
            if let name = try? FileManager.default.contentsOfDirectory(atPath: tmp).first,
               let size = try? FileManager.default.attributesOfItem(atPath: "\(tmp)/\(name)")[.size] as? Int, size > 0 {
                partial = name
                break
            }
            usleep(10_000)
        }
        #expect(partial != nil, "the writer never wrote its temporary file")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir + "/blobs").filter { $0.count > 10 }.isEmpty)
        // The leftover is still there until the store is opened again, which removes it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp) == [partial!])
        let store = try BlobStore(dataDirectory: dir)
        #expect(store.recovery.removedTemporaryFiles == [partial!])
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty)
        #expect(try store.allDigests().isEmpty)
    }
}
