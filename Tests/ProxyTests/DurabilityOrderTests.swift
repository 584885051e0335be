import BlobStore
import DepotTestSupport
import Foundation
import Testing

/// What Depot tells a client is on stable storage first. `depot serve` runs as a process and
/// strace records its system calls around one upload and one fill; the order must be: the
/// temporary file's data synced, the blob published (link), its directory synced, the
/// Catalog's write-ahead log synced (the upload's record, the fill's mapping), and only then
/// the answer on the socket: the 204 of the upload, the first hit on the filled image.
@Suite(.enabled(if: rootTestsEnabled, "strace attaches to depot serve, which needs root; CI=true runs it anyway, to fail"), .serialized)
struct DurabilityOrderTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    static let traced = ["fsync", "fdatasync", "link", "linkat", "rename", "renameat", "renameat2", "write", "writev", "sendmsg", "sendto"]

    @Test func anUploadIs204dOnlyAfterItsBytesAndItsRecordAreOnStableStorage() async throws {
        let data = TemporaryDirectory("depot-order-upload")
        let depot = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
        ])
        defer { depot.stopBlocking() }
        let file = try TestImageFile(megabytes: 3, seed: 95)
        let image = try await createImage(depot.url)

        let trace = try await SyscallTrace.attach(to: depot.pid, syscalls: Self.traced)
        let put = try await spawn("/usr/bin/curl", [
            "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-T", file.path,
            "-H", "X-Auth-Token: \(GlanceServer.alice)", "\(depot.url)/v2/images/\(image.id)/file",
        ])
        let calls = try await trace.finish()
        #expect(put.status == 0)
        #expect(String(decoding: put.stdout, as: UTF8.self) == "204")

        let answer = try #require(calls.first { Self.isSocketWrite($0, containing: "HTTP/1.1 204") }, "no 204 in \(trace.path)")
        try Self.expectDurableBefore(answer, blob: file.sha256, in: calls, trace: trace.path)
    }

    @Test func aFillIsCountedAsCachedOnlyAfterItsBytesAndItsMappingAreOnStableStorage() async throws {
        let data = TemporaryDirectory("depot-order-fill")
        let depot = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
        ])
        defer { depot.stopBlocking() }
        let bytes = pseudoRandomBytes(count: 3 << 20 | 777, seed: 96)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let sha256 = Digest.of(bytes, algorithm: .sha256).hex
        let url = "\(depot.url)/v2/images/\(image.id)/file"
        let body = data.path + "/client-body"

        let trace = try await SyscallTrace.attach(to: depot.pid, syscalls: Self.traced)
        let miss = try await spawn("/usr/bin/curl", ["-sS", "-o", body, "-w", "%{http_code}", "-H", "X-Auth-Token: \(GlanceServer.alice)", url])
        #expect(miss.status == 0)
        #expect(String(decoding: miss.stdout, as: UTF8.self) == "200")
        #expect(Digest.of(try [UInt8](Data(contentsOf: URL(fileURLWithPath: body))), algorithm: .sha256).hex == sha256)
        // The fill commits once the last byte is verified, maybe just after the client has it.
        var cache = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while cache != "hit", ContinuousClock.now < deadline {
            let head = try await spawn("/usr/bin/curl", [
                "-sS", "-o", "/dev/null", "-D", "-", "-r", "0-0", "-H", "X-Auth-Token: \(GlanceServer.alice)", url,
            ])
            #expect(head.status == 0)
            cache = String(decoding: head.stdout, as: UTF8.self).lowercased().split(separator: "\r\n")
                .first { $0.hasPrefix("x-depot-cache:") }.map { $0.dropFirst("x-depot-cache:".count).trimmingCharacters(in: .whitespaces) } ?? ""
            if cache != "hit" { try await Task.sleep(for: .milliseconds(100)) }
        }
        let calls = try await trace.finish()
        #expect(cache == "hit")

        let firstHit = try #require(calls.first { Self.isSocketWrite($0, containing: "x-depot-cache: hit") }, "no hit in \(trace.path)")
        try Self.expectDurableBefore(firstHit, blob: sha256, in: calls, trace: trace.path)
    }

    // MARK: Reading the trace

    static func isSocketWrite(_ call: Syscall, containing text: String) -> Bool {
        ["write", "writev", "sendmsg", "sendto"].contains(call.name) && call.arguments.contains("<TCP") && call.arguments.lowercased().contains(text.lowercased())
    }

    /// A successful fsync or fdatasync of a file or directory whose path ends with `suffix`
    /// (strace -y prints the descriptor's path; the suffix avoids comparing "/tmp//x" to "/tmp/x").
    static func isSync(_ call: Syscall, ofPathEndingWith suffix: String) -> Bool {
        ["fsync", "fdatasync"].contains(call.name) && call.arguments.hasSuffix("\(suffix)>") && call.result == "0"
    }

    /// The chain that must come before `answer`: a temp file synced, then linked to the blob's
    /// path, the blob's directory synced, the Catalog's WAL synced, each step started after
    /// the one before it returned, and `answer` started after the last.
    static func expectDurableBefore(_ answer: Syscall, blob hex: String, in calls: [Syscall], trace: String) throws {
        let directory = "/blobs/sha256/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))"
        let published = try #require(
            calls.first { ["link", "linkat"].contains($0.name) && $0.arguments.contains("\(directory)/\(hex)\"") && $0.result == "0" },
            "no link to \(directory)/\(hex) in \(trace)")
        let temporary = try #require(
            published.arguments.split(separator: "\"").first { $0.hasSuffix(".partial") }.map { "/" + ($0.split(separator: "/").last ?? "") },
            "no temporary file in \(published)")
        let dataSynced = calls.last { isSync($0, ofPathEndingWith: temporary) && $0.exit < published.entry }
        #expect(dataSynced != nil, "\(temporary) was not synced before it was linked: \(published) (\(trace))")
        let directorySynced = calls.first { isSync($0, ofPathEndingWith: directory) && $0.entry > published.exit }
        #expect(directorySynced != nil, "\(directory) was not synced after the link (\(trace))")
        let walSynced = calls.first { isSync($0, ofPathEndingWith: "/catalog.sqlite-wal") && $0.entry > (directorySynced ?? published).exit }
        #expect(walSynced != nil, "catalog.sqlite-wal was not synced after the blob was published (\(trace))")
        if let walSynced {
            #expect(walSynced.exit < answer.entry, "answered before the Catalog's WAL was synced: \(answer) came before \(walSynced) returned (\(trace))")
        }
        if let directorySynced { #expect(directorySynced.exit < answer.entry, "answered before \(directory) was synced (\(trace))") }
    }
}
