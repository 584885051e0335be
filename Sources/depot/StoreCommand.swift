import ArgumentParser
import BlobStore
import Foundation

/// `depot store …`: direct access to the content-addressed blob store.
struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Put, read and verify blobs in the local content-addressed store.",
        subcommands: [Put.self, Cat.self, List.self, Verify.self]
    )

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a file (or '-' for stdin) and print its SHA-256 digest.")

        @OptionGroup var dataDir: DataDirectoryOption

        @Argument(help: "The file to store, or '-' to read standard input.")
        var file: String

        @Option(name: .customLong("expect-sha256"), help: "Refuse the bytes unless they hash to this SHA-256 (hex).")
        var expectedSHA256: String?

        @Option(name: .customLong("expect-size"), help: "Refuse the bytes unless there are exactly this many.")
        var expectedSize: UInt64?

        @Flag(help: "Also compute and print SHA-512 and MD5 (Glance's os_hash_value and checksum).")
        var allDigests = false

        func run() throws {
            let lock = try lockDataDirectory(dataDir.path, .exclusive)
            defer { withExtendedLifetime(lock) {} }
            let store = try BlobStore(dataDirectory: dataDir.path)
            var expectation = BlobExpectation(size: expectedSize)
            if let hex = expectedSHA256 {
                do { expectation.sha256 = try Digest.sha256(hex: hex) } catch {
                    throw ValidationError("--expect-sha256: \(error)")
                }
            }
            let input: Int32
            if file == "-" {
                input = STDIN_FILENO
            } else {
                input = open(file, O_RDONLY | O_CLOEXEC)
                guard input >= 0 else {
                    throw CLIError("cannot open \(file): \(String(cString: strerror(errno)))")
                }
            }
            defer { if input != STDIN_FILENO { close(input) } }
            var info = stat()
            let size: UInt64? = fstat(input, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? UInt64(info.st_size) : nil
            let progress = Progress(label: "store put", total: size)
            var stored: UInt64 = 0
            let writer = try store.makeWriter(expecting: expectation, alsoCompute: allDigests ? [.sha512, .md5] : [])
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
            defer { chunk.deallocate() }
            while true {
                let n = read(input, chunk.baseAddress, chunk.count)
                if n < 0 {
                    if errno == EINTR { continue }
                    writer.abort()
                    throw CLIError("reading \(file): \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                try writer.write(UnsafeRawBufferPointer(rebasing: chunk[..<n]))
                stored += UInt64(n)
                progress.update(done: stored)
            }
            let blob = try writer.commit()
            progress.finish()
            if allDigests {
                for algorithm in DigestAlgorithm.allCases {
                    if let digest = blob.digests[algorithm] {
                        print(algorithm.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + digest.hex)
                    }
                }
                print("size    \(blob.size)")
            } else {
                print(blob.digest.hex)
            }
        }
    }

    struct Cat: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a blob's bytes to standard output.")

        @OptionGroup var dataDir: DataDirectoryOption

        @Argument(help: "The blob's SHA-256 digest (hex).")
        var digest: String

        @Option(help: "Only bytes START-END (inclusive, like an HTTP range).")
        var range: String?

        func run() throws {
            let lock = try lockDataDirectory(dataDir.path, .shared)
            defer { withExtendedLifetime(lock) {} }
            let store = try BlobStore(dataDirectory: dataDir.path)
            let reader = try store.open(try parseDigest(digest))
            let selected = try range.map(parseInclusiveRange).map { $0.lowerBound..<($0.upperBound + 1) }
            try reader.forEachChunk(of: selected) { (buffer) throws(BlobStoreError) in
                var done = 0
                while done < buffer.count {
                    let n = Glibc.write(STDOUT_FILENO, buffer.baseAddress! + done, buffer.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw .io(operation: "write", path: "<stdout>", errno: errno)
                    }
                    done += n
                }
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the blobs with their sizes.")

        @OptionGroup var dataDir: DataDirectoryOption

        func run() throws {
            let lock = try lockDataDirectory(dataDir.path, .shared)
            defer { withExtendedLifetime(lock) {} }
            let store = try BlobStore(dataDirectory: dataDir.path)
            for digest in try store.allDigests().sorted(by: { $0.hex < $1.hex }) {
                print("\(digest.hex)  \(try store.size(of: digest))")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-hash blobs; quarantine any whose bytes do not match their name.",
            discussion: "Exits 1 when any blob is corrupt, so scripts and monitoring can act on it.")

        @OptionGroup var dataDir: DataDirectoryOption

        @Argument(help: "Only this blob (SHA-256 hex); all blobs when omitted.")
        var digest: String?

        func run() throws {
            let lock = try lockDataDirectory(dataDir.path, .exclusive)
            defer { withExtendedLifetime(lock) {} }
            let store = try BlobStore(dataDirectory: dataDir.path)
            for stray in store.recovery.strayFiles {
                printError("stray file (not a blob name, never served): \(stray)")
            }
            let corrupt: [CorruptBlob]
            if let digest {
                corrupt = try store.verify(try parseDigest(digest)).map { [$0] } ?? []
                if corrupt.isEmpty { print("ok \(digest)") }
            } else {
                let total = try store.allDigests().reduce(UInt64(0)) { $0 + ((try? store.size(of: $1)) ?? 0) }
                let progress = Progress(label: "verify", total: total)
                let report = try store.verifyAll { done, count, bytes in
                    progress.update(done: bytes, note: "blob \(done) of \(count)")
                }
                progress.finish(note: "\(report.checked) blobs")
                corrupt = report.corrupt
                print("checked \(report.checked) blobs (\(formatBytes(report.bytesChecked))), \(report.corrupt.count) corrupt")
            }
            for blob in corrupt {
                print("CORRUPT \(blob.digest.hex): bytes hash to \(blob.actual.hex); moved to \(blob.quarantinedAt)")
            }
            if !corrupt.isEmpty { throw ExitCode(1) }
        }
    }
}

func parseDigest(_ hex: String) throws -> Digest {
    do {
        return try Digest.sha256(hex: hex)
    } catch {
        throw ValidationError("\(hex) is not a SHA-256 digest: \(error)")
    }
}
