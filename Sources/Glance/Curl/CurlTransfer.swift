import CCurl
import Foundation
import Synchronization

/// An HTTP request as the transfer layer sees it.
struct HTTPRequest: Sendable {
    var method: String
    var url: String
    var headers: [(String, String)] = []
    var body: RequestBody = .none
    /// `start-end` (inclusive) or `start-`: libcurl's form, without `bytes=`.
    var range: String?
    /// Whole-request limit; nil for streaming transfers that may legitimately run for hours.
    var totalTimeout: Duration?
}

/// Where a request body comes from.
enum RequestBody: Sendable {
    case none
    case bytes([UInt8])
    /// Reads until it returns 0; called on the transfer thread.
    case stream(length: UInt64?, read: @Sendable (UnsafeMutableRawBufferPointer) throws -> Int)
}

/// Status line and headers of a final (non-1xx) response.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status: Int
    /// Header fields in arrival order, names as sent.
    public var headers: [(name: String, value: String)]

    /// The first value of a header, compared case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    public static func == (a: HTTPResponseHead, b: HTTPResponseHead) -> Bool {
        a.status == b.status && a.headers.elementsEqual(b.headers) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// Limits that apply to every transfer.
struct TransferLimits: Sendable {
    var connectTimeout: Duration
    /// A transfer that moves fewer than `minimumSpeed` bytes/s for `stallTimeout` (not counting
    /// time the consumer spent not reading) is aborted.
    var stallTimeout: Duration
    var minimumSpeed: Int
    var tls: TLSOptions
}

/// TLS settings for backend connections.
public struct TLSOptions: Sendable, Equatable {
    /// PEM bundle of CAs to trust instead of the system's.
    public var caBundle: String?
    public var clientCertificate: String?
    public var clientKey: String?
    /// Skips certificate verification; only by explicit configuration.
    public var insecure: Bool

    public init(caBundle: String? = nil, clientCertificate: String? = nil, clientKey: String? = nil, insecure: Bool = false) {
        self.caBundle = caBundle
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.insecure = insecure
    }
}

/// Why a transfer ended without a complete response.
enum TransportFailure: Error, Sendable {
    case curl(code: Int, message: String)
    case stalled(seconds: Double)
    case cancelled
    /// The body sink or head check refused the response.
    case rejected(any Error)
    case requestBody(any Error)
}

/// A request body source the read callback can pull from.
private final class BodySource {
    var bytes: [UInt8]
    var offset = 0
    let stream: (@Sendable (UnsafeMutableRawBufferPointer) throws -> Int)?
    var error: (any Error)?

    init(_ body: RequestBody) {
        switch body {
        case .none: bytes = []; stream = nil
        case let .bytes(b): bytes = b; stream = nil
        case let .stream(_, read): bytes = []; stream = read
        }
    }
}

/// The state libcurl's callbacks share during one transfer.
private final class TransferContext {
    let onHead: (HTTPResponseHead) throws -> Void
    let onBody: (UnsafeRawBufferPointer) throws -> Void
    let isCancelled: () -> Bool
    let limits: TransferLimits
    let source: BodySource
    /// Hand every response's head and body to the callbacks (proxying), not only 2xx ones.
    let streamAllStatuses: Bool

    var status = 0
    var headers: [(name: String, value: String)] = []
    var head: HTTPResponseHead?
    /// The body of a response of status 300 and up: Glance's error message, capped.
    var errorBody: [UInt8] = []
    var failure: TransportFailure?

    // Stall detection.
    var windowStart = ContinuousClock.now
    var windowBytes: Int64 = 0
    var lastTotal: Int64 = 0
    var consumerTime: Duration = .zero

    init(onHead: @escaping (HTTPResponseHead) throws -> Void, onBody: @escaping (UnsafeRawBufferPointer) throws -> Void,
         isCancelled: @escaping () -> Bool, limits: TransferLimits, source: BodySource, streamAllStatuses: Bool) {
        self.streamAllStatuses = streamAllStatuses
        self.onHead = onHead
        self.onBody = onBody
        self.isCancelled = isCancelled
        self.limits = limits
        self.source = source
    }

    static let maxErrorBody = 64 * 1024

    func headerLine(_ line: Substring) -> Bool {
        if line.hasPrefix("HTTP/") {
            let parts = line.split(separator: " ", maxSplits: 2)
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            headers = []
            return true
        }
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty {
            // End of a header section; 1xx responses are followed by the real one.
            guard status >= 200 else { return true }
            let head = HTTPResponseHead(status: status, headers: headers)
            self.head = head
            if status < 300 || streamAllStatuses {
                do { try onHead(head) } catch {
                    failure = .rejected(error)
                    return false
                }
            }
            return true
        }
        if let colon = trimmed.firstIndex(of: ":") {
            let name = String(trimmed[..<colon])
            let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers.append((name, value))
        }
        return true
    }

    func body(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let head else { return true }
        if head.status >= 300 && !streamAllStatuses {
            errorBody.append(contentsOf: buffer.prefix(Self.maxErrorBody - errorBody.count))
            return true
        }
        let started = ContinuousClock.now
        defer { consumerTime += ContinuousClock.now - started }
        do {
            try onBody(buffer)
            return true
        } catch {
            failure = .rejected(error)
            return false
        }
    }

    /// Progress callback: cancellation and stall detection.
    func progress(total: Int64) -> Bool {
        if isCancelled() {
            failure = .cancelled
            return false
        }
        windowBytes += total - lastTotal
        lastTotal = total
        let now = ContinuousClock.now
        let elapsed = now - windowStart - consumerTime
        if elapsed >= limits.stallTimeout {
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            if Double(windowBytes) < Double(limits.minimumSpeed) * seconds {
                failure = .stalled(seconds: seconds)
                return false
            }
            windowStart = now
            windowBytes = 0
            consumerTime = .zero
        }
        return true
    }
}

private func contextOf(_ pointer: UnsafeMutableRawPointer?) -> TransferContext {
    Unmanaged<TransferContext>.fromOpaque(pointer!).takeUnretainedValue()
}

/// Runs one HTTP exchange with libcurl, blocking the calling thread (never a Swift
/// concurrency thread: see `TransferThreads`).
enum CurlTransfer {
    /// Performs the request; `onHead` sees a 2xx head before any body byte, `onBody` gets the
    /// body of 2xx responses. Returns the final head and, for statuses of 300 and up, the body.
    static func perform(
        _ request: HTTPRequest,
        handle: EasyHandle,
        limits: TransferLimits,
        isCancelled: @escaping () -> Bool,
        streamAllStatuses: Bool = false,
        onHead: @escaping (HTTPResponseHead) throws -> Void = { _ in },
        onBody: @escaping (UnsafeRawBufferPointer) throws -> Void
    ) throws(TransportFailure) -> (head: HTTPResponseHead, errorBody: [UInt8]) {
        let h = handle.raw
        let source = BodySource(request.body)
        let context = TransferContext(
            onHead: onHead, onBody: onBody, isCancelled: isCancelled, limits: limits, source: source, streamAllStatuses: streamAllStatuses)
        let unmanaged = Unmanaged.passRetained(context)
        defer { unmanaged.release() }
        let ctx = unmanaged.toOpaque()

        // libcurl keeps this pointer until the handle is reset: it must outlive the call.
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer {
            _ = depot_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, nil)
            errorBuffer.deallocate()
        }
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }

        _ = depot_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = depot_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = depot_curl_setopt_long(h, CURLOPT_TCP_NODELAY, 1)
        _ = depot_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        _ = depot_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(limits.connectTimeout))
        if let total = request.totalTimeout {
            _ = depot_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, milliseconds(total))
        }
        _ = depot_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 256 * 1024)
        _ = depot_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
        _ = depot_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = depot_curl_setopt_string(h, CURLOPT_USERAGENT, "depot/\(GlanceClient.version)")
        if let range = request.range { _ = depot_curl_setopt_string(h, CURLOPT_RANGE, range) }
        applyTLS(limits.tls, to: h)

        _ = depot_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)
        _ = depot_curl_setopt_header(h) { data, size, count, user in
            let n = size * count
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
            return contextOf(user).headerLine(line[...]) ? n : 0
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_HEADERDATA, ctx)
        _ = depot_curl_setopt_write(h) { data, size, count, user in
            let n = size * count
            return contextOf(user).body(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_WRITEDATA, ctx)
        _ = depot_curl_setopt_xferinfo(h) { user, _, dlnow, _, ulnow in
            contextOf(user).progress(total: Int64(dlnow) + Int64(ulnow)) ? 0 : 1
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, ctx)

        var headers = request.headers
        switch request.method {
        case "GET": _ = depot_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD": _ = depot_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        default: _ = depot_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
        }
        switch request.body {
        case .none:
            break
        case let .bytes(bytes):
            _ = depot_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            _ = depot_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(bytes.count))
        case let .stream(length, _):
            _ = depot_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            if let length {
                _ = depot_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
            } else {
                headers.append(("Transfer-Encoding", "chunked"))
            }
        }
        if case .none = request.body {} else {
            // CUSTOMREQUEST keeps the method; UPLOAD alone would make it PUT.
            _ = depot_curl_setopt_read(h) { buffer, size, count, user in
                let ctx = contextOf(user)
                let room = size * count
                let source = ctx.source
                if let stream = source.stream {
                    do {
                        return try stream(UnsafeMutableRawBufferPointer(start: buffer, count: room))
                    } catch {
                        source.error = error
                        return Int(depot_curl_readfunc_abort())
                    }
                }
                let n = min(room, source.bytes.count - source.offset)
                source.bytes.withUnsafeBytes { bytes in
                    UnsafeMutableRawPointer(buffer!).copyMemory(from: bytes.baseAddress! + source.offset, byteCount: n)
                }
                source.offset += n
                return n
            }
            _ = depot_curl_setopt_pointer(h, CURLOPT_READDATA, ctx)
            // Glance answers at once; waiting for 100-continue only adds a second of latency.
            headers.append(("Expect", ""))
        }
        for (name, value) in headers {
            headerList = curl_slist_append(headerList, value.isEmpty ? "\(name):" : "\(name): \(value)")
        }
        _ = depot_curl_setopt_slist(h, CURLOPT_HTTPHEADER, headerList)

        let code = curl_easy_perform(h)
        if let error = source.error { throw .requestBody(error) }
        if let failure = context.failure { throw failure }
        guard code == CURLE_OK else {
            let detail = String(cString: errorBuffer)
            throw .curl(code: Int(code.rawValue), message: detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail)
        }
        guard let head = context.head else {
            throw .curl(code: Int(CURLE_GOT_NOTHING.rawValue), message: "no HTTP response")
        }
        return (head, context.errorBody)
    }

    private static func applyTLS(_ tls: TLSOptions, to h: UnsafeMutableRawPointer) {
        if let ca = tls.caBundle { _ = depot_curl_setopt_string(h, CURLOPT_CAINFO, ca) }
        if let cert = tls.clientCertificate { _ = depot_curl_setopt_string(h, CURLOPT_SSLCERT, cert) }
        if let key = tls.clientKey { _ = depot_curl_setopt_string(h, CURLOPT_SSLKEY, key) }
        if tls.insecure {
            _ = depot_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 0)
            _ = depot_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 0)
        }
    }

    private static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds) * 1000 + Int(d.components.attoseconds / 1_000_000_000_000_000)
    }
}
