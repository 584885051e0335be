import Foundation

// Clients that share no code with Depot, to judge Depot's server. Depot's own Glance client
// resumes after resets, short bodies and 5xx, so a download through it passes whatever the
// server did; these report what one request got and fail on anything short of a whole answer.

/// One HTTP exchange as an independent client saw it.
public struct ClientExchange: Sendable, CustomStringConvertible {
    public let status: Int
    /// Header fields, names lowercased (the last of repeated fields).
    public let headers: [String: String]
    /// Body bytes received.
    public let received: UInt64
    /// SHA-256 of the body received, lowercase hex.
    public let sha256: String

    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    public var description: String { "\(status), \(received) bytes, sha256 \(sha256.prefix(16))…, x-depot-cache \(header("x-depot-cache") ?? "-")" }
}

/// The client did not get a whole answer: a reset, a body shorter than its Content-Length or
/// its chunked framing, a timeout, or a failed connection.
public struct IncompleteExchange: Error, CustomStringConvertible {
    public let client: String
    public let url: String
    public let detail: String
    public var description: String { "\(client) GET \(url): \(detail)" }
}

/// The script Python runs: one request with http.client, the body read to its declared end and
/// hashed with hashlib; a JSON line on stdout; exit 1 when the body is not whole.
private let pythonGetScript = """
    import hashlib, http.client, json, sys, urllib.parse
    method, url, headers, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    out = {"status": 0, "headers": [], "received": 0, "sha256": "", "error": None}
    digest = hashlib.sha256()
    try:
        conn.request(method, u.path + ("?" + u.query if u.query else ""), headers=headers)
        r = conn.getresponse()
        out["status"], out["headers"] = r.status, [[k.lower(), v] for k, v in r.getheaders()]
        declared = r.getheader("Content-Length")
        # read(n) returns what arrived when the connection ends early, without an error:
        # count the bytes against Content-Length here (chunked bodies raise IncompleteRead).
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            out["received"] += len(chunk)
        if method != "HEAD" and declared is not None and out["received"] != int(declared):
            out["error"] = "short body: %d of %s bytes" % (out["received"], declared)
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    out["sha256"] = digest.hexdigest()
    print(json.dumps(out))
    sys.exit(1 if out["error"] else 0)
    """

/// One request with Python's `http.client` (the system's python3, not Glance's venv), reading
/// the body to exactly its Content-Length (or its chunked end) and hashing it with `hashlib`.
///
/// - Parameters:
///   - headers: request fields (Python adds Host and Accept-Encoding: identity).
///   - timeout: seconds any one socket operation may wait.
/// - Throws: `IncompleteExchange` on a reset, a short body, a timeout or a refused connection.
public func pythonRequest(_ url: String, method: String = "GET", headers: [String: String] = [:], timeout: Double = 120) async throws -> ClientExchange {
    let headerJSON = String(decoding: try JSONSerialization.data(withJSONObject: headers), as: UTF8.self)
    let result = try await spawn("/usr/bin/python3", ["-c", pythonGetScript, method, url, headerJSON, String(timeout)])
    let text = String(decoding: result.stdout, as: UTF8.self)
    guard let json = (try? JSONSerialization.jsonObject(with: Data(result.stdout))) as? [String: Any] else {
        throw IncompleteExchange(client: "python http.client", url: url, detail: "exit \(result.status), output \(text.prefix(500))")
    }
    if let error = json["error"] as? String {
        throw IncompleteExchange(client: "python http.client", url: url, detail: "status \(json["status"] ?? "?"), \(json["received"] ?? "?") bytes: \(error)")
    }
    guard result.status == 0 else { throw IncompleteExchange(client: "python http.client", url: url, detail: "exit \(result.status): \(text.prefix(500))") }
    var fields: [String: String] = [:]
    for pair in json["headers"] as? [[String]] ?? [] where pair.count == 2 { fields[pair[0]] = pair[1] }
    return ClientExchange(
        status: json["status"] as? Int ?? 0, headers: fields, received: (json["received"] as? NSNumber)?.uint64Value ?? 0,
        sha256: json["sha256"] as? String ?? "")
}

/// One GET with curl, the body piped into coreutils' `sha256sum` (nothing kept in memory or on
/// disk), curl's exit status checked.
///
/// - Parameter extra: more curl arguments (`-H`, `-r`, ...).
/// - Throws: `IncompleteExchange` when curl exits non-zero (18: body shorter than announced,
///   56: reset, 28: timeout, 7: refused).
public func curlStream(_ url: String, token: String?, _ extra: [String] = []) async throws -> ClientExchange {
    let dir = TemporaryDirectory("depot-curl-stream")
    var arguments = ["-sS", "-D", dir.path + "/head", "-w", "%{stderr}%{http_code} %{size_download}\\n"]
    if let token { arguments += ["-H", "X-Auth-Token: \(token)"] }
    arguments += extra + [url]
    // $PIPESTATUS keeps curl's own status: a pipeline's status is sha256sum's.
    let script = "/usr/bin/curl \"$@\" 2>\"$0/stderr\" | /usr/bin/sha256sum; echo \"curl-exit ${PIPESTATUS[0]}\""
    let result = try await spawn("/bin/bash", ["-c", script, dir.path] + arguments)
    let lines = String(decoding: result.stdout, as: UTF8.self).split(separator: "\n")
    let stderr = (try? String(contentsOfFile: dir.path + "/stderr", encoding: .utf8)) ?? ""
    let exit = lines.last.flatMap { $0.hasPrefix("curl-exit ") ? Int($0.dropFirst(10)) : nil }
    let figures = stderr.split(whereSeparator: \.isNewline).last?.split(separator: " ") ?? []
    guard exit == 0, lines.count == 2, figures.count == 2, let status = Int(figures[0]), let received = UInt64(figures[1]) else {
        throw IncompleteExchange(client: "curl", url: url, detail: "exit \(exit.map(String.init) ?? "?"): \(stderr.prefix(500))")
    }
    return ClientExchange(
        status: status, headers: parseHeaderBlock((try? String(contentsOfFile: dir.path + "/head", encoding: .utf8)) ?? ""),
        received: received, sha256: String(lines[0].prefix(64)))
}

/// The fields of the last response head in `text` (curl's `-D` file), names lowercased.
public func parseHeaderBlock(_ text: String) -> [String: String] {
    var headers: [String: String] = [:]
    for line in text.split(separator: "\r\n") {
        if line.hasPrefix("HTTP/") { headers = [:]; continue }
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return headers
}

/// Digests of a file by coreutils (`sha256sum`, `sha512sum`, `md5sum`), lowercase hex: what a
/// test expects, computed by code that is not Depot's.
public func coreutilsDigest(_ tool: String, of path: String) async throws -> String {
    let output = try await run("/usr/bin/" + tool, [path])
    return String(output.prefix { !$0.isWhitespace })
}
