import DepotTestSupport
import Foundation
@testable import FormatInspector
import PropertyBased
import Testing

/// Depot's inspection against oslo.utils' own inspectors (the ones Glance 33 runs), on the
/// corpus of `scripts/format-corpus` and on mutants of it that break headers in every way a
/// fuzzer finds: for each format, whether it matches and, for a match, whether it is complete,
/// its virtual size, its actual size and which safety checks fail. The expected values come
/// from oslo.utils, read by `scripts/glance/oslo_format_facts.py` as Glance reads an upload.
@Suite(.serialized) struct OsloDifferentialTests {
    /// Builds the corpus in a temporary directory: (file name, path) for each file.
    static func corpus(_ dir: TemporaryDirectory) async throws -> [(name: String, path: String)] {
        _ = try await run("/bin/bash", [repositoryRoot + "/scripts/format-corpus", dir.path + "/corpus"])
        let manifest = try String(contentsOfFile: dir.path + "/corpus/MANIFEST", encoding: .utf8)
        return manifest.split(separator: "\n").map { line in
            let name = String(line.split(separator: "\t")[0])
            return (name, dir.path + "/corpus/" + name)
        }
    }

    /// oslo.utils' facts about each file: path → format → field → value.
    static func osloFacts(_ paths: [String]) async throws -> [String: [String: [String: Any]]] {
        _ = try await run("/bin/bash", [repositoryRoot + "/scripts/glance-dev", "install"])
        var result: [String: [String: [String: Any]]] = [:]
        // A few hundred paths per run keeps the command line short.
        for start in stride(from: 0, to: paths.count, by: 200) {
            let batch = Array(paths[start..<min(paths.count, start + 200)])
            let output = try await run(await GlanceServer.venv + "/bin/python", [repositoryRoot + "/scripts/glance/oslo_format_facts.py"] + batch)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: [String: [String: Any]]])
            result.merge(json) { a, _ in a }
        }
        return result
    }

    /// The differences between Depot's inspection of `bytes` and oslo.utils' facts.
    static func differences(_ inspection: Inspection, _ oslo: [String: [String: Any]]) -> [String] {
        var found: [String] = []
        for facts in inspection.formats {
            guard let reference = oslo[facts.format] else {
                found.append("\(facts.format): oslo.utils has no such inspector")
                continue
            }
            if let raises = reference["matches"] as? String {
                if facts.format != "vmdk" || !inspection.undecidable { found.append("\(facts.format): oslo.utils \(raises), Depot decided") }
                continue
            }
            let matches = reference["matches"] as? Bool ?? false
            if facts.format == "vmdk" && inspection.undecidable {
                found.append("vmdk: Depot finds it undecidable, oslo.utils says \(matches)")
                continue
            }
            guard matches == facts.matches else {
                found.append("\(facts.format): matches \(facts.matches), oslo.utils \(matches)")
                continue
            }
            guard matches else { continue }
            let complete = reference["complete"] as? Bool ?? false
            if complete != facts.complete { found.append("\(facts.format): complete \(facts.complete), oslo.utils \(complete)") }
            let virtualSize = (reference["virtual_size"] as? NSNumber)?.int64Value
            if virtualSize != facts.virtualSize {
                found.append("\(facts.format): virtual_size \(facts.virtualSize.map(String.init) ?? "raises"), oslo.utils \(virtualSize.map(String.init) ?? "raises")")
            }
            let actualSize = (reference["actual_size"] as? NSNumber)?.int64Value
            if actualSize != facts.actualSize { found.append("\(facts.format): actual_size \(facts.actualSize), oslo.utils \(actualSize ?? -1)") }
            if complete, let checks = reference["failed_checks"] as? [String], checks != facts.failedChecks.map(\.check).sorted() {
                found.append("\(facts.format): failed checks \(facts.failedChecks.map(\.check)), oslo.utils \(checks)")
            }
        }
        return found
    }

    @Test func theCorpusIsInspectedAsOsloUtilsInspectsIt() async throws {
        let dir = TemporaryDirectory("format-corpus")
        let files = try await Self.corpus(dir)
        #expect(files.count >= 40)
        let oslo = try await Self.osloFacts(files.map(\.path))
        var rng = Xoshiro(seed: (16, 1, 2, 3))
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file.path)))
            let inspection = ChunkingTests.inspect(bytes, rng: &rng)
            let reference = try #require(oslo[file.path])
            let differences = Self.differences(inspection, reference)
            #expect(differences.isEmpty, "\(file.name): \(differences)")
        }
    }

    /// Windows of a file where headers live: the first sectors, the ISO descriptor, the VHDX
    /// region table, qemu's VHDX metadata region, the VMDK descriptor and the tail.
    static func hotOffset(_ count: Int, rng: inout some RandomNumberGenerator) -> Int {
        let windows = [(0, 1024), (32768, 34816), (196_608, 196_608 + 512), (2 << 20, (2 << 20) + 512), (512, 2048), (max(0, count - 1536), count)]
        let (low, high) = rng.pick(windows)
        return min(count - 1, low + rng.below(max(1, high - low)))
    }

    /// Values that change meaning in headers: zero, all ones, small counts, the signatures.
    static let interesting: [[UInt8]] = [
        [0, 0, 0, 0], [0xFF, 0xFF, 0xFF, 0xFF], [1, 0, 0, 0], [0, 0, 0, 1], [3, 0, 0, 0], [0xEE], [0x80], [0x55, 0xAA],
        Array("KDMV".utf8), Array("vhdxfile".utf8), Array("regi".utf8), Array("metadata".utf8), Array("CD001".utf8),
        Array("createType=\"".utf8), Array("monolithicSparse\"".utf8), Array("\nRW 1 SPARSE \"/x\"\n".utf8), [0x51, 0x46, 0x49, 0xFB],
    ]

    @Test func mutantsAreInspectedAsOsloUtilsInspectsThem() async throws {
        let dir = TemporaryDirectory("format-mutants")
        let files = try await Self.corpus(dir)
        var rng = Xoshiro(seed: (1616, 1, 2, 3))
        var mutants: [(path: String, bytes: [UInt8])] = []
        let seeds = try files.filter { !$0.name.hasPrefix("trunc-") && $0.name != "empty.img" }.map { file in
            // Headers and tables sit in the first 3 MiB; the tail matters for streamOptimized.
            (file.name, Array(try [UInt8](Data(contentsOf: URL(fileURLWithPath: file.path))).prefix(3 << 20)))
        }
        let count = Int(ProcessInfo.processInfo.environment["DEPOT_FORMAT_MUTANTS"] ?? "") ?? 600
        for index in 0..<count {
            var (name, bytes) = rng.pick(seeds)
            for _ in 0..<rng.int(1...4) where !bytes.isEmpty {
                let at = Self.hotOffset(bytes.count, rng: &rng)
                switch rng.below(5) {
                case 0: bytes[at] ^= 1 << UInt8(rng.below(8))
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2:
                    let token = rng.pick(Self.interesting)
                    let end = min(bytes.count, at + token.count)
                    bytes.replaceSubrange(at..<end, with: token.prefix(end - at))
                case 3: bytes.removeSubrange(at...)
                default: bytes = mutate(bytes, rng: &rng, rounds: 1, interesting: Self.interesting)
                }
            }
            let path = dir.path + "/mutant-\(index)-\(name)"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            mutants.append((path, bytes))
        }
        let oslo = try await Self.osloFacts(mutants.map(\.path))
        var failures = 0
        for mutant in mutants {
            let differences = Self.differences(ChunkingTests.inspect(mutant.bytes, rng: &rng), try #require(oslo[mutant.path]))
            if !differences.isEmpty {
                failures += 1
                Issue.record("\(mutant.path): \(differences)")
                if failures > 10 { break }
            }
        }
    }
}
