// depot-engine-bench: the cache engine alone, without sockets or disks.
//
//   depot-engine-bench [--blobs N] [--runs R] [--json] [--check THRESHOLDS.json]
//
// Measures, each R times (median and spread reported): LRU touches and evictions per second
// with N blobs in the index, the index's memory per blob, Range header parses per second, and
// SHA-256 throughput. --check compares the medians with checked-in minimums and exits 1 when
// one is missed (a regression), printing which.
import BlobStore
import Eviction
import Foundation
import HTTPSemantics

struct Measurement {
    let name: String
    let unit: String
    let values: [Double]
    var median: Double { values.sorted()[values.count / 2] }
    var spread: (Double, Double) { (values.min() ?? 0, values.max() ?? 0) }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Resident bytes of this process.
func residentBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (fields.count > 1 ? Double(fields[1]) ?? 0 : 0) * Double(sysconf(Int32(_SC_PAGESIZE)))
}

/// Distinct digests, cheaply: SHA-256 of a counter.
func digests(_ count: Int) -> [Digest] {
    (0..<count).map { n in
        var value = UInt64(n)
        return withUnsafeBytes(of: &value) { Digest.of(Array($0), algorithm: .sha256) }
    }
}

var arguments = CommandLine.arguments.dropFirst()
var blobCount = 1_000_000
var runs = 3
var json = false
var thresholdsPath: String?
while let argument = arguments.popFirst() {
    switch argument {
    case "--blobs": blobCount = Int(arguments.popFirst() ?? "") ?? blobCount
    case "--runs": runs = Int(arguments.popFirst() ?? "") ?? runs
    case "--json": json = true
    case "--check": thresholdsPath = arguments.popFirst()
    default:
        FileHandle.standardError.write(Data("usage: depot-engine-bench [--blobs N] [--runs R] [--json] [--check THRESHOLDS.json]\n".utf8))
        exit(2)
    }
}

let keys = digests(blobCount)
var results: [Measurement] = []
var touches: [Double] = [], evictions: [Double] = [], memory: [Double] = [], builds: [Double] = []
var generator = SystemRandomNumberGenerator()
for _ in 0..<runs {
    let before = residentBytes()
    var t0 = now()
    var index = LRUIndex()
    for key in keys { index.touch(key, size: 1 << 30) }
    builds.append(Double(blobCount) / (now() - t0))
    // Only the first build grows the process; later runs reuse the memory freed before them.
    if memory.isEmpty { memory.append((residentBytes() - before) / Double(blobCount)) }

    let order = (0..<blobCount).map { _ in Int.random(in: 0..<blobCount, using: &generator) }
    t0 = now()
    for n in order { _ = index.touch(keys[n]) }
    touches.append(Double(blobCount) / (now() - t0))

    // Evict everything in batches of 1000, skipping every 97th blob as if pinned.
    t0 = now()
    var evicted = 0
    while true {
        let victims = index.victims(toFree: 1000 << 30) { $0.bytes[0] % 97 == 0 }
        if victims.isEmpty { break }
        for victim in victims { _ = index.remove(victim.digest) }
        evicted += victims.count
    }
    evictions.append(Double(evicted) / (now() - t0))
}
results.append(Measurement(name: "lru_insert", unit: "ops/s", values: builds))
results.append(Measurement(name: "lru_touch", unit: "ops/s", values: touches))
results.append(Measurement(name: "lru_evict", unit: "ops/s", values: evictions))
results.append(Measurement(name: "lru_bytes_per_blob", unit: "bytes", values: memory))

let headers = ["bytes=100-3999", "bytes=-3999", "bytes=6000-", "bytes=0-0,100-199,5000-5999,-10", "bytes=500-100"]
var parses: [Double] = []
for _ in 0..<runs {
    let t0 = now()
    var satisfiable = 0
    for n in 0..<1_000_000 {
        if case .ranges = RangeRequest.parse(headers[n % headers.count], size: 10_000) { satisfiable += 1 }
    }
    parses.append(1_000_000 / (now() - t0))
    precondition(satisfiable > 0)
}
results.append(Measurement(name: "range_parse", unit: "ops/s", values: parses))

let buffer = [UInt8](repeating: 0xA5, count: 1 << 20)
var hashing: [Double] = []
for _ in 0..<runs {
    let hasher = DigestHasher(.sha256)
    let t0 = now()
    buffer.withUnsafeBytes { for _ in 0..<512 { hasher.update($0) } }
    _ = hasher.finish()
    hashing.append(Double(512 << 20) / (now() - t0) / 1e6)
}
results.append(Measurement(name: "sha256", unit: "MB/s", values: hashing))

if json {
    let object = Dictionary(uniqueKeysWithValues: results.map { ($0.name, ["median": $0.median, "min": $0.spread.0, "max": $0.spread.1, "unit": $0.unit] as [String: Any]) })
    let data = try JSONSerialization.data(withJSONObject: ["blobs": blobCount, "runs": runs, "results": object], options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
} else {
    print("Engine micro-benchmarks, \(blobCount) blobs, \(runs) runs (median, spread)")
    print("| what | median | spread |")
    print("|---|---|---|")
    for m in results {
        print(String(format: "| %@ | %.0f %@ | %.0f-%.0f |", m.name, m.median, m.unit, m.spread.0, m.spread.1))
    }
}

if let thresholdsPath {
    guard let data = FileManager.default.contents(atPath: thresholdsPath),
          let thresholds = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    else {
        FileHandle.standardError.write(Data("cannot read thresholds from \(thresholdsPath)\n".utf8))
        exit(2)
    }
    var failed = false
    for m in results {
        guard let limit = thresholds[m.name] as? [String: Double] else { continue }
        if let minimum = limit["min"], m.median < minimum {
            print("REGRESSION \(m.name): \(m.median) \(m.unit) is below the threshold \(minimum)")
            failed = true
        }
        if let maximum = limit["max"], m.median > maximum {
            print("REGRESSION \(m.name): \(m.median) \(m.unit) is above the threshold \(maximum)")
            failed = true
        }
    }
    print(failed ? "thresholds: FAILED" : "thresholds: ok")
    exit(failed ? 1 : 0)
}
