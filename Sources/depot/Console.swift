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

/// The progress of a long command, on stderr: on a terminal a bar with the rate and the time
/// left, redrawn in place; otherwise (a log, a pipe) a plain line every `plainInterval`
/// seconds (`DEPOT_PROGRESS_INTERVAL`, default 5) and one at the end, so cron mails and CI
/// logs show progress without control characters. A command done sooner shows nothing (on a
/// terminal, one done within 0.3 s; a smaller `DEPOT_PROGRESS_INTERVAL` shortens that too).
final class Progress {
    enum Unit {
        case bytes
        /// Counted things, e.g. "blobs".
        case items(String)
    }

    private let label: String
    private let unit: Unit
    private let terminal: Bool
    private let plainInterval: Double
    private let started = Progress.now()
    private var lastDraw: Double = -1
    private var total: UInt64?
    private var done: UInt64 = 0
    private var drawn = false

    init(
        label: String, unit: Unit = .bytes, total: UInt64? = nil, terminal: Bool = isatty(STDERR_FILENO) == 1,
        plainInterval: Double = ProcessInfo.processInfo.environment["DEPOT_PROGRESS_INTERVAL"].flatMap(Double.init) ?? 5
    ) {
        self.label = label
        self.unit = unit
        self.total = total
        self.terminal = terminal
        self.plainInterval = plainInterval
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Records how far the work is; draws at most ten times a second on a terminal.
    func update(done: UInt64, total: UInt64? = nil, note: String = "") {
        self.done = done
        if let total { self.total = total }
        let now = Self.now()
        // The first draw waits too: a quick command should not flash a bar or log a line.
        let since = lastDraw < 0 ? started : lastDraw
        let wait = terminal ? min(lastDraw < 0 ? 0.3 : 0.1, plainInterval) : plainInterval
        guard now - since >= wait else { return }
        lastDraw = now
        draw(now: now, note: note)
    }

    /// Ends the progress: a terminal's line is cleared, a log gets the closing line.
    func finish(note: String = "") {
        if terminal {
            if drawn { writeStderr("\r\u{1B}[K") }
        } else if drawn {
            writeStderr("\(label): done, \(amount(done)) in \(Self.duration(Self.now() - started))\(rateText(Self.now()))\(note.isEmpty ? "" : ", " + note)\n")
        }
    }

    private func amount(_ value: UInt64) -> String {
        switch unit {
        case .bytes: formatBytes(value)
        case let .items(name): "\(value) \(name)"
        }
    }

    /// A rate from the first few milliseconds says little, unless a good part of the work is
    /// done already (a fast disk finishes a whole `store put` within them): 50 ms, or an eighth.
    private func sampleIsMeaningful(_ elapsed: Double) -> Bool {
        guard done > 0, elapsed > 0 else { return false }
        if elapsed > 0.05 { return true }
        return total.map { done >= $0 / 8 } ?? false
    }

    private func rateText(_ now: Double) -> String {
        let elapsed = now - started
        guard sampleIsMeaningful(elapsed) else { return "" }
        let rate = Double(done) / elapsed
        switch unit {
        case .bytes: return ", \(formatBytes(UInt64(rate)))/s"
        case let .items(name): return String(format: ", %.1f %@/s", rate, name)
        }
    }

    private func etaText(_ now: Double) -> String? {
        let elapsed = now - started
        guard let total, sampleIsMeaningful(elapsed), total >= done else { return nil }
        return Self.duration(Double(total - done) / (Double(done) / elapsed))
    }

    /// 75 → "1:15", 3725 → "1:02:05".
    static func duration(_ seconds: Double) -> String {
        let whole = Int(seconds.rounded(.up))
        let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60)
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
    }

    private func draw(now: Double, note: String) {
        let fraction = total.map { $0 == 0 ? 1 : min(1, Double(done) / Double($0)) }
        let amounts = total.map { "\(amount(done)) of \(amount($0))" } ?? amount(done)
        let eta = etaText(now).map { ", ETA \($0)" } ?? ""
        let percent = fraction.map { String(format: "%3.0f%%, ", $0 * 100) } ?? ""
        if terminal {
            let width = 24
            let bar = fraction.map { f in
                let filled = Int(f * Double(width))
                return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            } ?? ""
            drawn = true
            writeStderr("\r\u{1B}[K\(label) \(bar)\(percent)\(amounts)\(rateText(now))\(eta)\(note.isEmpty ? "" : "  " + note)")
        } else {
            drawn = true
            writeStderr("\(label): \(percent)\(amounts)\(rateText(now))\(eta)\(note.isEmpty ? "" : ", " + note)\n")
        }
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
