import ArgumentParser
import BlobStore
import Catalog
import Foundation

/// `depot fsck`: checks a stopped Depot's data directory and repairs what it can.
///
/// The blob store is the truth about bytes, the Catalog an index of it: every blob is hashed
/// (SHA-256, and SHA-512/MD5 for Glance's hashes), corrupt ones are quarantined, Catalog rows
/// without a file are dropped, files without a row are added back. A lost `catalog.sqlite`
/// is rebuilt this way; images map to their blobs again on their next download, by Glance's
/// `os_hash_value`.
struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Verify every blob and reconcile the Catalog with the disk (run while Depot is stopped).")

    @OptionGroup var dataDir: DataDirectoryOption

    @Flag(help: "Report only; change nothing.")
    var dryRun = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    struct Report: Encodable {
        var blobsChecked = 0
        var bytesChecked: UInt64 = 0
        var corrupt: [String] = []
        var temporaryFilesRemoved = 0
        var strayFiles: [String] = []
        var rowsWithoutFile: [String] = []
        var filesWithoutRow: [String] = []
        var digestsFilledIn = 0
        var pendingPushesLost: [String] = []
        var catalogRebuilt = false

        var clean: Bool { corrupt.isEmpty && rowsWithoutFile.isEmpty && filesWithoutRow.isEmpty && strayFiles.isEmpty && pendingPushesLost.isEmpty }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: dataDir.path) else {
            throw CLIError("no data directory at \(dataDir.path); pass --data-dir")
        }
        // Exclusive even for --dry-run: opening the store removes leftover temporary files.
        let lock = try lockDataDirectory(dataDir.path, .exclusive)
        defer { withExtendedLifetime(lock) {} }
        var report = Report()
        let catalogPath = dataDir.path + "/catalog.sqlite"
        report.catalogRebuilt = !FileManager.default.fileExists(atPath: catalogPath)
        // Opening the store removes temporary files no writer holds, as at start-up.
        let store = try BlobStore(dataDirectory: dataDir.path)
        report.temporaryFilesRemoved = store.recovery.removedTemporaryFiles.count
        report.strayFiles = store.recovery.strayFiles
        let catalog = try Catalog(path: catalogPath)

        let onDisk = try store.allDigests()
        let rows = Dictionary(uniqueKeysWithValues: try catalog.allBlobs().map { ($0.sha256, $0) })
        let totalBytes = onDisk.reduce(UInt64(0)) { $0 + ((try? store.size(of: $1)) ?? 0) }
        let progress = Progress(label: "fsck", total: totalBytes)
        var present: Set<String> = []
        for (n, digest) in onDisk.enumerated() {
            let reader = try store.open(digest)
            let hashers = [DigestHasher(.sha256), DigestHasher(.sha512), DigestHasher(.md5)]
            var hashed: UInt64 = 0
            try reader.forEachChunk(chunkSize: 4 << 20) { chunk in
                for hasher in hashers { hasher.update(chunk) }
                hashed += UInt64(chunk.count)
                progress.update(done: report.bytesChecked + hashed, note: "blob \(n + 1) of \(onDisk.count)")
            }
            let digests = hashers.map { $0.finish() }
            report.blobsChecked += 1
            report.bytesChecked += reader.size
            if digests[0] != digest {
                report.corrupt.append(digest.hex)
                if !dryRun {
                    // verify() quarantines what does not match its name.
                    _ = try store.verify(digest)
                    try catalog.removeBlob(digest)
                }
                continue
            }
            present.insert(digest.hex)
            let row = rows[digest.hex]
            if row == nil { report.filesWithoutRow.append(digest.hex) }
            if row?.sha512 == nil || row?.md5 == nil {
                if row != nil { report.digestsFilledIn += 1 }
                if !dryRun {
                    let blob = CommittedBlob(
                        digest: digest, size: reader.size, digests: [.sha256: digests[0], .sha512: digests[1], .md5: digests[2]], deduplicated: false,
                        path: store.path(for: digest))
                    try catalog.recordBlob(blob)
                    try catalog.recordDigests(of: digest, sha512: digests[1].hex, md5: digests[2].hex)
                }
            }
        }
        progress.finish(note: "\(onDisk.count) blobs")
        let pendingPushes = try catalog.pushes(in: [.pending, .staged])
        for (hex, _) in rows where !present.contains(hex) {
            report.rowsWithoutFile.append(hex)
            report.pendingPushesLost += pendingPushes.filter { $0.sha256 == hex }.map { "\($0.cloud)/\($0.imageID)" }
            if !dryRun { try catalog.removeBlob(try Digest.sha256(hex: hex)) }
        }

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            printText(report)
        }
        if !report.corrupt.isEmpty || !report.pendingPushesLost.isEmpty { throw ExitCode(1) }
    }

    /// The report for a person: one line per kind of finding.
    private func printText(_ report: Report) {
        print("checked \(report.blobsChecked) blobs, \(formatBytes(report.bytesChecked))\(report.catalogRebuilt ? "; the catalog was missing and is rebuilt" : "")")
        let verb = dryRun ? "found" : "fixed"
        if !report.corrupt.isEmpty { print("\(report.corrupt.count) corrupt blob(s) \(dryRun ? "found" : "quarantined"): \(report.corrupt.joined(separator: " "))") }
        if !report.filesWithoutRow.isEmpty { print("\(report.filesWithoutRow.count) blob(s) missing from the catalog \(verb)") }
        if !report.rowsWithoutFile.isEmpty { print("\(report.rowsWithoutFile.count) catalog row(s) without a file \(verb)") }
        if report.digestsFilledIn > 0 { print("\(report.digestsFilledIn) blob(s) given their SHA-512/MD5") }
        if report.temporaryFilesRemoved > 0 { print("\(report.temporaryFilesRemoved) temporary file(s) removed") }
        if !report.strayFiles.isEmpty { print("stray files under blobs/ (not served; remove them by hand): \(report.strayFiles.joined(separator: " "))") }
        if !report.pendingPushesLost.isEmpty {
            print("uploads whose bytes are gone before their push (upload them again): \(report.pendingPushesLost.joined(separator: " "))")
        }
        if report.clean { print("no problems found") }
    }
}
