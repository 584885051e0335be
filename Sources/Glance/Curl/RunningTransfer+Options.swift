import CCurl
import Foundation

extension RunningTransfer {
    /// Sets the easy handle's options for the job: the request, limits, TLS and the callbacks.
    func configure() {
        let h = handle.raw
        let request = job.request
        let limits = job.limits
        _ = depot_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = depot_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = depot_curl_setopt_long(h, CURLOPT_TCP_NODELAY, 1)
        _ = depot_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        _ = depot_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(limits.connectTimeout))
        if let total = request.totalTimeout {
            _ = depot_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Self.milliseconds(total))
        }
        _ = depot_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 256 * 1024)
        _ = depot_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = depot_curl_setopt_string(h, CURLOPT_USERAGENT, "depot/\(GlanceClient.version)")
        if let range = request.range { _ = depot_curl_setopt_string(h, CURLOPT_RANGE, range) }
        Self.applyTLS(limits.tls, to: h)
        _ = depot_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)
        setCallbacks()

        var headers = request.headers
        switch request.method {
        case "GET": _ = depot_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD": _ = depot_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        default: _ = depot_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
        }
        var length: UInt64?
        switch request.body {
        case .none: break
        case let .bytes(bytes): length = UInt64(bytes.count)
        case let .file(_, fileLength): length = fileLength
        case let .streamed(streamLength): length = streamLength
        }
        if case .none = request.body {} else {
            // CUSTOMREQUEST keeps the method; UPLOAD alone would make it PUT.
            _ = depot_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            if let length {
                _ = depot_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
            } else {
                headers.append(("Transfer-Encoding", "chunked"))
            }
            // Glance answers at once; waiting for 100-continue only adds a second of latency.
            headers.append(("Expect", ""))
        }
        for (name, value) in headers {
            headerList = curl_slist_append(headerList, value.isEmpty ? "\(name):" : "\(name): \(value)")
        }
        _ = depot_curl_setopt_slist(h, CURLOPT_HTTPHEADER, headerList)
    }

    private func setCallbacks() {
        let h = handle.raw
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = depot_curl_setopt_header(h) { data, size, count, user in
            let n = size * count
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
            return RunningTransfer.of(user).headerLine(line[...]) ? n : 0
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_HEADERDATA, context)
        _ = depot_curl_setopt_write(h) { data, size, count, user in
            RunningTransfer.of(user).body(UnsafeRawBufferPointer(start: data, count: size * count))
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_WRITEDATA, context)
        if case .none = job.request.body { return }
        _ = depot_curl_setopt_read(h) { buffer, size, count, user in
            RunningTransfer.of(user).read(into: UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
        }
        _ = depot_curl_setopt_pointer(h, CURLOPT_READDATA, context)
    }

    /// The transfer a callback's user pointer names: the loop keeps it alive while its handle
    /// is in the multi handle, the only time libcurl calls back.
    private static func of(_ pointer: UnsafeMutableRawPointer?) -> RunningTransfer {
        Unmanaged<RunningTransfer>.fromOpaque(pointer!).takeUnretainedValue()
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

/// Where the read callback takes a request body from.
struct RequestSource {
    enum Read {
        case bytes(Int)
        /// Nothing yet: the transfer pauses until the producer sends more.
        case wait
        /// `error` says why.
        case failed
    }

    private enum Kind {
        case none
        case bytes([UInt8], offset: Int)
        case file(FileDescriptorBox)
        case stream(ByteStream)
    }

    private var kind: Kind
    private(set) var error: (any Error)?

    init(_ body: RequestBody, stream: ByteStream?) {
        switch body {
        case .none: kind = .none
        case let .bytes(bytes): kind = .bytes(bytes, offset: 0)
        case let .file(file, _): kind = .file(file)
        case .streamed: kind = stream.map { .stream($0) } ?? .none
        }
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Read {
        switch kind {
        case .none:
            return .bytes(0)
        case let .bytes(bytes, offset):
            let n = min(buffer.count, bytes.count - offset)
            guard n > 0 else { return .bytes(0) }
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            kind = .bytes(bytes, offset: offset + n)
            return .bytes(n)
        case let .file(file):
            while true {
                let n = Glibc.read(file.fd, buffer.baseAddress, buffer.count)
                if n >= 0 { return .bytes(n) }
                if errno != EINTR {
                    error = POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
                    return .failed
                }
            }
        case let .stream(stream):
            switch stream.read(into: buffer) {
            case let .bytes(n, _): return .bytes(n)
            case .idle(.wait): return .wait
            case .idle(.end): return .bytes(0)
            case let .idle(.failed(failure)):
                error = failure
                return .failed
            case .idle(.cancelled):
                error = CancellationError()
                return .failed
            }
        }
    }
}
