import Foundation

/// An HTTP/1.1 client that owes nothing to Depot's code: Python's `http.client` in a child
/// process, one kept-alive connection per base URL, driven one exchange at a time.
///
/// It reports what arrived on the wire, header fields in order, and refuses a short body
/// (`IncompleteRead`) instead of passing it off as complete.
public final class WireClient: Sendable {
    /// One answer as the client saw it.
    public struct Exchange: Sendable, Equatable {
        public var status: Int
        /// Header fields in arrival order, names lowercased.
        public var headers: [HeaderLine]
        public var body: [UInt8]
        /// Why the exchange failed (connection reset, short body…); nil when it completed. The
        /// status, header fields and the bytes that did arrive are kept.
        public var error: String?

        public func header(_ name: String) -> String? { headers.first { $0.name == name.lowercased() }?.value }

        /// The body as a JSON object, if it is one.
        public var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] }
    }

    public struct HeaderLine: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var value: String
        public var description: String { "\(name): \(value)" }
    }

    private let python: ChildProcess

    /// - Parameters:
    ///   - authority: a CA certificate (PEM) that `https` URLs must chain to.
    ///   - splitFirstHead: send the first request head of each connection in two writes 50 ms
    ///     apart, so that the server reads it in two pieces (Depot then leaves the whole
    ///     connection to NIO's HTTP codec instead of its wire fast path).
    public init(authority: String? = nil, splitFirstHead: Bool = false) async throws {
        python = try await ChildProcess.start(
            ["/usr/bin/python3", "-u", "-c", Self.script, authority ?? "", splitFirstHead ? "split" : ""], stdin: [])
    }

    deinit { python.send(SIGTERM) }

    /// Sends one request and returns the answer.
    public func exchange(_ method: String, _ url: String, headers: [(String, String)] = [], body: [UInt8]? = nil) async throws -> Exchange {
        var request: [String: Any] = ["method": method, "url": url, "headers": headers.map { [$0.0, $0.1] }]
        if let body { request["body"] = Data(body).base64EncodedString() }
        try await python.write(Array(try JSONSerialization.data(withJSONObject: request)) + [UInt8(ascii: "\n")])
        guard let line = await python.nextLine() else { throw CommandFailed(command: "python3 http.client exited", status: 1) }
        let answer = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        let headers = (answer["headers"] as? [[String]] ?? []).map { HeaderLine(name: $0[0].lowercased(), value: $0[1]) }
        let body = (answer["body"] as? String).flatMap { Data(base64Encoded: $0) }.map { Array($0) } ?? []
        return Exchange(status: answer["status"] as? Int ?? 0, headers: headers, body: body, error: answer["error"] as? String)
    }

    static let script = #"""
import base64, http.client, json, select, ssl, sys, time, urllib.parse
authority = sys.argv[1]
split_first_head = sys.argv[2] == "split"
connections = {}
class SplitFirstHead(http.client.HTTPConnection):
    first = True
    def send(self, data):
        if self.sock is None:
            self.connect()
        if self.first and b"\r\n\r\n" in data:
            self.first = False
            self.sock.sendall(data[:16])
            time.sleep(0.05)
            self.sock.sendall(data[16:])
        else:
            super().send(data)
def exchange(request, url, key, body):
    connection = connections.get(key)
    if connection is not None and connection.sock is not None and select.select([connection.sock], [], [], 0)[0]:
        # Readable while idle: the server closed the kept-alive connection (or wrote what no
        # request asked for). A new one, before a request that may not be sent twice is lost
        # on it (a POST to Glance failed so, its idle connection closed under a busy CI run).
        connections.pop(key).close()
        connection = None
    reused = connection is not None
    if connection is None:
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.netloc, timeout=60, context=ssl.create_default_context(cafile=authority))
        elif split_first_head:
            connection = SplitFirstHead(url.netloc, timeout=60)
        else:
            connection = http.client.HTTPConnection(url.netloc, timeout=60)
        connections[key] = connection
    target = url.path + ("?" + url.query if url.query else "")
    try:
        connection.request(request["method"], target, body=body, headers={name: value for name, value in request["headers"]})
        return connection.getresponse()
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        # A kept-alive connection the server closed while idle: a GET or HEAD is sent again on
        # a new one, as browsers and urllib3 do. Anything else is the server's answer.
        connections.pop(key).close()
        if not reused or request["method"] not in ("GET", "HEAD"):
            raise
        return exchange(request, url, key, body)

for line in sys.stdin:
    request = json.loads(line)
    url = urllib.parse.urlsplit(request["url"])
    key = (url.scheme, url.netloc)
    answer = {}
    try:
        body = base64.b64decode(request["body"]) if "body" in request else None
        response = exchange(request, url, key, body)
        answer = {"status": response.status, "headers": response.getheaders(), "body": ""}
        try:
            body = response.read()
        except http.client.IncompleteRead as short:
            answer["body"] = base64.b64encode(short.partial).decode()
            raise
        answer["body"] = base64.b64encode(body).decode()
        if response.will_close:
            connections.pop(key).close()
    except Exception as error:
        answer["error"] = repr(error)
        connection = connections.pop(key, None)
        if connection is not None:
            connection.close()
    print(json.dumps(answer), flush=True)
"""#
}
