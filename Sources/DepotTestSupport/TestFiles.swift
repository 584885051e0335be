import Foundation

/// A fresh directory under the system temp dir, removed when the test ends.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "depot-test") {
        let template = NSTemporaryDirectory() + "\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { fatalError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func files(under sub: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: path + "/" + sub) else { return [] }
        return e.compactMap { item in
            let name = item as! String
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path + "/" + sub + "/" + name, isDirectory: &isDir)
            return isDir.boolValue ? nil : name
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), the same for the same seed.
public func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.count / 8
        let p = raw.baseAddress!
        for i in 0..<words {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: state, toByteOffset: i * 8, as: UInt64.self)
        }
        for i in (words * 8)..<raw.count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            p.storeBytes(of: UInt8(truncatingIfNeeded: state), toByteOffset: i, as: UInt8.self)
        }
    }
    return out
}

/// The resident set size of this process in bytes (Linux `VmRSS`).
public func residentMemoryBytes() -> UInt64 {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) } ?? 0
        return kib * 1024
    }
    return 0
}

/// The repository's root directory (where Package.swift is).
public let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    fatalError("Package.swift not found above \(#filePath)")
}()
