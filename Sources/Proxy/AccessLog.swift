import Foundation
import Glibc
import HTTPSemantics
import Logging
import ServiceLifecycle
import Synchronization

/// The access log: one line per request, in `StreamLogHandler`'s format (what `depot serve`'s
/// other loggers write to stderr), handed off in batches instead of formatted through swift-log
/// and written on the event loop one line at a time.
///
/// A request appends its line to a bounded buffer; `AccessLogService` writes what collected
/// a few milliseconds after the first line of a batch, and everything at shutdown. A buffer past
/// `limit` bytes is written by the request that filled it, so no line is ever dropped.
/// Line: `TIMESTAMP info depot.access: KEY=VALUE… [Proxy] METHOD PATH STATUS`, keys sorted,
/// the timestamp local time, `%Y-%m-%dT%H:%M:%S%z`, as swift-log's `StreamLogHandler` writes it.
public final class AccessLog: Sendable {
    struct Pending {
        var bytes: [UInt8] = []
        var second: time_t = -1
        /// The current second's timestamp, as the bytes each line starts with.
        var timestamp: [UInt8] = []
        /// Set once the writer has stopped: lines are written by the request that logs them.
        var direct = false
    }

    /// Whether lines are written at all (the access logger's level lets `info` through).
    let enabled: Bool
    /// Buffered bytes past which the appender writes the batch itself.
    let limit: Int
    /// How long the writer waits after a batch's first line for more to join it.
    let collection: Duration
    private let pending = Mutex(Pending())
    private let wakes: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    public init(enabled: Bool, limit: Int = 256 << 10, collection: Duration = .milliseconds(10)) {
        self.enabled = enabled
        self.limit = limit
        self.collection = collection
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        tzset()
    }

    deinit { flush() }

    /// Appends one request's line.
    /// - Parameter metadata: key/value pairs, sorted by key by the caller (`StreamLogHandler` sorts them).
    func record(_ message: String, metadata: KeyValuePairs<String, String>) {
        guard enabled else { return }
        append { Self.appendFields(message, metadata: metadata, to: &$0) }
    }

    /// Appends the line of a hit answered on the event loop: byte for byte what
    /// `record("METHOD PATH STATUS", metadata: ["bytes": …, "cache": "hit", "duration_ms": …,
    /// "path": "fast"])` writes, with the numbers written as digits into the batch instead of
    /// a String each (about 4k instructions per hit).
    /// - Parameters:
    ///   - path: the request target without its query (`Router.pathPart`).
    ///   - bytes: body bytes sent.
    ///   - nanoseconds: the request's duration (a `Duration` is taken apart with a 128-bit division).
    func recordHit(method: String, path: Substring, status: UInt, bytes body: UInt64, nanoseconds: Int64) {
        guard enabled else { return }
        append { Self.appendHitFields(method: method, path: path, status: status, bytes: body, nanoseconds: nanoseconds, to: &$0) }
    }

    /// A line's metadata (` key=value`, in the order given) and message (` [Proxy] message`).
    static func appendFields(_ message: String, metadata: KeyValuePairs<String, String>, to bytes: inout [UInt8]) {
        for (key, value) in metadata {
            bytes.append(UInt8(ascii: " "))
            bytes.append(contentsOf: key.utf8)
            bytes.append(UInt8(ascii: "="))
            bytes.append(contentsOf: value.utf8)
        }
        bytes.append(contentsOf: " [Proxy] ".utf8)
        bytes.append(contentsOf: message.utf8)
    }

    /// What `appendFields` writes for a hit answered on the event loop (see `recordHit`), made
    /// in a scratch buffer and appended in one copy: an append per piece (ten of them) cost
    /// about as much as the rest of the line together.
    static func appendHitFields(method: String, path: Substring, status: UInt, bytes body: UInt64, nanoseconds: Int64, to bytes: inout [UInt8]) {
        var method = method
        // The contiguous bytes in one copy: a substring's UTF-8 view is copied a byte at a time.
        var path = path
        method.withUTF8 { method in
            path.withUTF8 { path in
                // The literals, three numbers of at most 20 digits and the duration's text.
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 192 + method.count + path.count) { out in
                    var at = 0
                    put(" bytes=", to: out, at: &at)
                    DecimalDigits.write(body, to: out, at: &at)
                    put(" cache=hit duration_ms=", to: out, at: &at)
                    writeMilliseconds(nanoseconds: nanoseconds, to: out, at: &at)
                    put(" path=fast [Proxy] ", to: out, at: &at)
                    put(method, to: out, at: &at)
                    out[at] = UInt8(ascii: " ")
                    at += 1
                    put(path, to: out, at: &at)
                    out[at] = UInt8(ascii: " ")
                    at += 1
                    DecimalDigits.write(UInt64(status), to: out, at: &at)
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: out[..<at]))
                }
            }
        }
    }

    /// Copies a literal's bytes to `out` at `at`, moving `at` past them; `out` has room.
    private static func put(_ literal: StaticString, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        put(UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount), to: out, at: &at)
    }

    private static func put(_ bytes: UnsafeBufferPointer<UInt8>, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        (out.baseAddress! + at).update(from: source, count: bytes.count)
        at += bytes.count
    }

    /// Appends a line: the timestamp and logger, what `fields` writes (the metadata and the
    /// message), the newline; writes the batch itself when it is past `limit`.
    private func append(_ fields: (inout [UInt8]) -> Void) {
        let now = time(nil)
        let (full, signal) = pending.withLock { pending -> ([UInt8]?, Bool) in
            let wasEmpty = pending.bytes.isEmpty
            if now != pending.second {
                pending.second = now
                pending.timestamp = Array(Self.timestamp(now).utf8)
            }
            // Straight into the batch's bytes: a line built as a String first cost more than
            // the rest of the access log per hit.
            pending.bytes.append(contentsOf: pending.timestamp)
            pending.bytes.append(" info depot.access:")
            fields(&pending.bytes)
            pending.bytes.append(UInt8(ascii: "\n"))
            guard pending.bytes.count < limit, !pending.direct else {
                defer { pending.bytes = [] }
                return (pending.bytes, false)
            }
            return (nil, wasEmpty)
        }
        if let full { Self.write(full) } else if signal { wake.yield() }
    }

    /// Milliseconds with one decimal, rounded half up: `milliseconds(_:)`'s text of the same
    /// duration as bytes (rounding the nanoseconds rounds the attoseconds they were cut from
    /// the same way: both are floor divisions), written to `out` at `at`, which has room for
    /// 32 bytes.
    static func writeMilliseconds(nanoseconds: Int64, to out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        guard nanoseconds >= 0 else {
            var text = milliseconds(.nanoseconds(nanoseconds))
            text.withUTF8 { put($0, to: out, at: &at) }
            return
        }
        let tenths = nanoseconds / 100_000 + (nanoseconds % 100_000 >= 50_000 ? 1 : 0)
        DecimalDigits.write(UInt64(tenths / 10), to: out, at: &at)
        out[at] = UInt8(ascii: ".")
        out[at + 1] = UInt8(ascii: "0") + UInt8(tenths % 10)
        at += 2
    }

    /// Milliseconds with one decimal, rounded half up (what `String(format: "%.1f")` printed,
    /// without Foundation's formatter on every request).
    static func milliseconds(_ duration: Duration) -> String {
        guard let tenths = tenthsOfMilliseconds(duration) else {
            let (seconds, attoseconds) = duration.components
            return String(format: "%.1f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
        }
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// A duration in tenths of milliseconds, rounded half up, from its own seconds and
    /// attoseconds (1 ms = 10^15 attoseconds); nil for a negative or enormous one.
    private static func tenthsOfMilliseconds(_ duration: Duration) -> Int64? {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0, seconds < Int64.max / 10_000 else { return nil }
        return seconds * 10_000 + (attoseconds + 50_000_000_000_000) / 100_000_000_000_000
    }

    /// Writes the lines collected so far.
    public func flush() {
        let batch = pending.withLock { pending in
            defer { pending.bytes = [] }
            return pending.bytes
        }
        if !batch.isEmpty { Self.write(batch) }
    }

    /// Writes batches as they form until the task is cancelled, then what is left; from then on
    /// each line is written as it is logged, so the requests a forced shutdown cuts short (after
    /// the grace period every service is cancelled at once) still leave their lines.
    func run() async {
        for await _ in wakes {
            try? await Task.sleep(for: collection)
            flush()
            if Task.isCancelled { break }
        }
        let rest = pending.withLock { pending in
            pending.direct = true
            defer { pending.bytes = [] }
            return pending.bytes
        }
        if !rest.isEmpty { Self.write(rest) }
    }

    /// To stderr (descriptor 2, where `StreamLogHandler` writes its lines, one `write` each),
    /// in writes of whole lines of at most `PIPE_BUF` bytes: a pipe keeps each such write in one
    /// piece, so another logger's line never lands inside one of these.
    private static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                var end = min(all.count, start + Int(PIPE_BUF))
                if end < all.count, let newline = all[start..<end].lastIndex(of: UInt8(ascii: "\n")) { end = newline + 1 }
                var offset = start
                while offset < end {
                    let n = Glibc.write(2, all.baseAddress! + offset, end - offset)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return }
                    offset += n
                }
                start = end
            }
        }
    }

    static func timestamp(_ seconds: time_t) -> String {
        var seconds = seconds
        var local = tm()
        guard localtime_r(&seconds, &local) != nil else { return "<unknown>" }
        var buffer = [Int8](repeating: 0, count: 64)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// Writes the access log's batches until shutdown, and the last one then.
public struct AccessLogService: Service {
    let log: AccessLog

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await log.run()
        }
    }
}

extension [UInt8] {
    /// Appends a literal's bytes in one copy: appending a `String`'s UTF-8 view goes through
    /// the generic sequence path (about 70 instructions per literal per hit).
    mutating func append(_ literal: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }
}
