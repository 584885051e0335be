import Foundation

/// A fresh directory under the system temp dir, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init(_ label: String = "depot-test") {
        let template = NSTemporaryDirectory() + "\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { fatalError("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func files(under sub: String) -> [String] {
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
func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
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

/// Runs a command and returns its standard output; fails the caller on a non-zero exit.
@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw CommandFailed(command: ([executable] + arguments).joined(separator: " "), status: process.terminationStatus)
    }
    return String(decoding: data, as: UTF8.self)
}

struct CommandFailed: Error, CustomStringConvertible {
    let command: String
    let status: Int32
    var description: String { "\(command) exited \(status)" }
}
