import Foundation

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
    /// An open file, read from its current offset to its end on the transfer loop (page-cache
    /// reads of a blob that was just written; a push is slower than the disk by far).
    case file(FileDescriptorBox, length: UInt64)
    /// Chunks that async code sends into `Transfer.requestBody`; chunked without a length.
    case streamed(length: UInt64?)
}

/// What the transfer loop does with a response.
enum ResponseHandling: Sendable, Equatable {
    /// Keeps the whole body in memory (metadata, uploads' answers).
    case collect
    /// Streams the body through `Transfer.body` with backpressure: for 2xx heads, or for every
    /// status when `allStatuses` (proxying). Other statuses' bodies are kept, capped, as the
    /// error's message.
    case stream(allStatuses: Bool)
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
    /// time it was paused because Depot's side was not ready) is aborted.
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
    /// The request body's source failed (a file read, a producer that threw).
    case requestBody(any Error)
}

