import ArgumentParser
import Foundation

/// A failure the CLI reports as one plain line, without a stack trace.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func printError(_ message: String) {
    writeStderr(message + "\n")
}

func writeStderr(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}

/// Human size: 1536 → "1.5 KiB".
func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// A progress line on stderr that rewrites itself, shown only on a terminal.
final class ProgressLine {
    private let label: String
    private let enabled = isatty(STDERR_FILENO) == 1
    private var lastDraw: timespec = timespec()
    private var drawn = false

    init(label: String) { self.label = label }

    func update(_ text: String) {
        guard enabled else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        // At most ten redraws a second: a terminal is slower than a fast verify.
        let elapsedMs = (now.tv_sec - lastDraw.tv_sec) * 1000 + (now.tv_nsec - lastDraw.tv_nsec) / 1_000_000
        guard !drawn || elapsedMs >= 100 else { return }
        lastDraw = now
        drawn = true
        writeStderr("\r\u{1B}[K\(label) \(text)")
    }

    func finish() {
        if enabled && drawn { writeStderr("\r\u{1B}[K") }
    }
}

/// Parses a `--range START-END` option (inclusive, like an HTTP byte range).
func parseInclusiveRange(_ text: String) throws -> ClosedRange<UInt64> {
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 2, let first = UInt64(parts[0]), let last = UInt64(parts[1]), first <= last else {
        throw ValidationError("--range must look like START-END with START <= END, e.g. 0-1023")
    }
    return first...last
}
