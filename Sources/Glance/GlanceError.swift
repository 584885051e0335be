import Foundation

/// Why a call to Glance or Keystone failed. Carries the status, the service's own message and
/// the URL; never a token.
public enum GlanceError: Error, CustomStringConvertible, Sendable {
    /// The service answered with an error status.
    case http(status: Int, message: String, method: String, url: String)
    /// No usable answer: connection refused, reset, timeout, TLS failure…
    case transport(message: String, method: String, url: String, curlCode: Int)
    /// Fewer than the minimum bytes per second arrived for the whole stall window.
    case stalled(seconds: Double, url: String)
    /// A download ended with a different byte count than the server announced.
    case sizeMismatch(expected: UInt64, received: UInt64, url: String)
    /// The server answered something Depot cannot use (bad JSON, bad Content-Range…).
    case invalidResponse(reason: String, url: String)
    /// Keystone authentication failed, or its catalog has no image endpoint.
    case authentication(reason: String)
    /// The caller cancelled.
    case cancelled
    /// The request body's source failed (a file read, an upstream stream).
    case requestBody(reason: String, url: String)

    /// The HTTP status, when the service answered with one.
    public var status: Int? {
        if case let .http(status, _, _, _) = self { return status }
        return nil
    }

    public var isUnauthorized: Bool { status == 401 }
    public var isForbidden: Bool { status == 403 }
    public var isNotFound: Bool { status == 404 }
    public var isConflict: Bool { status == 409 }

    /// Whether a retry might succeed: the backend was unreachable, overloaded or cut the line.
    public var isTransient: Bool {
        switch self {
        case .transport, .stalled, .sizeMismatch: true
        case let .http(status, _, _, _): [408, 429, 500, 502, 503, 504].contains(status)
        default: false
        }
    }

    public var description: String {
        switch self {
        case let .http(status, message, method, url):
            "\(method) \(url): HTTP \(status)" + (message.isEmpty ? "" : ": \(message)")
        case let .transport(message, method, url, code):
            "\(method) \(url): \(message) (curl \(code))" + Self.tlsHint(url: url, curlCode: code)
        case let .stalled(seconds, url):
            "\(url): transfer stalled for \(String(format: "%.1f", seconds)) s"
        case let .sizeMismatch(expected, received, url):
            "\(url): expected \(expected) bytes, received \(received)"
        case let .invalidResponse(reason, url):
            "\(url): unexpected response: \(reason)"
        case let .authentication(reason):
            "authentication failed: \(reason)"
        case .cancelled:
            "cancelled"
        case let .requestBody(reason, url):
            "\(url): request body failed: \(reason)"
        }
    }

    /// A hint for an HTTPS backend that broke the connection without saying why.
    ///
    /// Under TLS 1.3 a server that wants a client certificate finishes the handshake and only
    /// then refuses; its alert races the client's request, so the client may see a reset (curl
    /// 55/56) or an empty reply (52) instead of an SSL error (35). The operator's fix is the same.
    static func tlsHint(url: String, curlCode: Int) -> String {
        guard url.lowercased().hasPrefix("https://"), [35, 52, 55, 56].contains(curlCode) else { return "" }
        return "; the backend broke the TLS connection: if it wants a client certificate, set client_certificate"
            + " and client_key for this cloud; if it is not trusted, set ca_bundle"
    }

    /// Glance's message from an error body, as plain text: the `message` of a JSON body, or the
    /// text of an HTML page without its title and heading.
    ///
    /// Glance's webob errors carry HTML in both forms: the page
    /// `<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1>…<br /><br />…`
    /// and, asked for JSON, `{"message": "Image … not found.<br /><br />\n\n\n", …}`.
    static func message(fromBody body: [UInt8]) -> String {
        guard !body.isEmpty else { return "" }
        if let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
            if let message = json["message"] as? String { return plainText(message) }
            for value in json.values {
                if let inner = value as? [String: Any], let message = inner["message"] as? String { return plainText(message) }
            }
        }
        var text = String(decoding: body, as: UTF8.self)
        for element in ["title", "h1"] {
            if let range = text.range(of: "<\(element)>.*?</\(element)>", options: [.regularExpression, .caseInsensitive]) {
                text.removeSubrange(range)
            }
        }
        return plainText(text)
    }

    /// Text without HTML markup and with the entities webob escapes decoded, whitespace runs
    /// (newlines too) made one space; at most 500 characters.
    public static func plainText(_ html: String) -> String {
        // Tags, `<!DOCTYPE …>` and comments.
        var text = html.replacingOccurrences(of: "<!--.*?-->|<[!/]?[A-Za-z][^>]*>", with: " ", options: .regularExpression)
        for (entity, character) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#x27;", "'"), ("&#39;", "'"), ("&amp;", "&")] {
            text = text.replacingOccurrences(of: entity, with: character)
        }
        text = text.replacingOccurrences(of: "\\s+", with: " ", options: .regularExpression)
        return String(text.trimmingCharacters(in: .whitespaces).prefix(500))
    }
}
