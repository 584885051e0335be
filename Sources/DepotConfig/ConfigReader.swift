import Foundation

/// Typed access to YAML entries with errors that name the file and line.
struct Reader {
    let path: String
    typealias Entry = (key: String, value: YAMLValue, line: Int)

    func error(_ entry: Entry, _ message: String) -> ConfigurationError {
        ConfigurationError(path: path, line: entry.line, message: "\(entry.key): \(message)")
    }

    func unknown(_ entry: Entry, in section: String?, known: [String]) -> ConfigurationError {
        ConfigurationError(
            path: path, line: entry.line,
            message: "unknown key \(section.map { "\($0)." } ?? "")\(entry.key); known keys here: \(known.joined(separator: ", "))")
    }

    func string(_ entry: Entry) throws(ConfigurationError) -> String {
        guard case let .scalar(value) = entry.value else { throw error(entry, "expected a single value") }
        return value
    }

    func map(_ entry: Entry) throws(ConfigurationError) -> [Entry] {
        if case .null = entry.value { return [] }
        guard case let .map(entries) = entry.value else { throw error(entry, "expected indented keys below it") }
        return entries
    }

    func bool(_ entry: Entry) throws(ConfigurationError) -> Bool {
        switch try string(entry).lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(entry, "expected true or false")
        }
    }

    /// A list of names: a block list, or one value of comma-separated names (as oslo.config
    /// writes a list option); `[]` or nothing is the empty list.
    func list(_ entry: Entry) throws(ConfigurationError) -> [String] {
        switch entry.value {
        case .null: return []
        case let .scalar(text):
            return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case let .list(items):
            var names: [String] = []
            for item in items {
                guard case let .scalar(name) = item else { throw error(entry, "expected a list of names") }
                names.append(name)
            }
            return names
        case .map: throw error(entry, "expected a list of names: one value (mbr, or names separated by commas) or a block list (- mbr)")
        }
    }

    func hostPort(_ entry: Entry) throws(ConfigurationError) -> (String, Int) {
        guard let parsed = parseHostPort(try string(entry)) else {
            throw error(entry, "expected HOST:PORT, e.g. 127.0.0.1:9494 or [::1]:9494")
        }
        return parsed
    }

    func logLevel(_ entry: Entry) throws(ConfigurationError) -> String {
        let value = try string(entry).lowercased()
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(value) else {
            throw error(entry, "expected one of trace, debug, info, notice, warning, error, critical")
        }
        return value
    }

    func fraction(_ entry: Entry) throws(ConfigurationError) -> Double {
        var text = try string(entry)
        var scale = 1.0
        if text.hasSuffix("%") {
            text.removeLast()
            scale = 100
        }
        guard let value = Double(text), value / scale > 0, value / scale <= 1 else {
            throw error(entry, "expected a fraction such as 0.95 or 95%")
        }
        return value / scale
    }

    func size(_ entry: Entry) throws(ConfigurationError) -> UInt64 {
        guard let bytes = parseSize(try string(entry)) else { throw error(entry, "expected a size such as 20GiB, 500MB or 1073741824, below 8 EiB") }
        return bytes
    }

    /// A rate in bytes per second: a size per second (50MB/s), or 0.
    func rate(_ entry: Entry) throws(ConfigurationError) -> UInt64 {
        let text = try string(entry)
        let amount = text.hasSuffix("/s") ? String(text.dropLast(2)) : text
        guard let bytes = parseSize(amount), text.hasSuffix("/s") || bytes == 0 else {
            throw error(entry, "expected a rate such as 50MB/s or 1GiB/s, or 0 to turn it off")
        }
        return bytes
    }

    func positiveInteger(_ entry: Entry) throws(ConfigurationError) -> Int {
        guard let value = Int(try string(entry)), value > 0 else { throw error(entry, "expected a whole number above 0") }
        return value
    }

    func positiveDuration(_ entry: Entry) throws(ConfigurationError) -> Duration {
        let value = try duration(entry)
        guard value > .zero else { throw error(entry, "expected a duration above 0, such as 30s") }
        return value
    }

    func duration(_ entry: Entry) throws(ConfigurationError) -> Duration {
        guard let value = parseDuration(try string(entry)) else { throw error(entry, "expected a duration such as 60s, 5m, 24h or 7d") }
        return value
    }

    func cloud(_ fields: [Entry]) throws(ConfigurationError) -> DepotConfiguration.CloudConfiguration {
        var cloud = DepotConfiguration.CloudConfiguration()
        for field in fields {
            switch field.key {
            case "owner": cloud.owner = try string(field)
            case "region": cloud.region = try string(field)
            case "glance_url": cloud.glanceURL = try string(field).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            case "service_token": cloud.serviceToken = try string(field)
            case "ca_bundle": cloud.caBundle = try string(field)
            case "client_certificate": cloud.clientCertificate = try string(field)
            case "client_key": cloud.clientKey = try string(field)
            case "insecure": cloud.insecure = try bool(field)
            case "keystone":
                var keystone = DepotConfiguration.KeystoneConfiguration()
                for sub in try map(field) {
                    switch sub.key {
                    case "auth_url": keystone.authURL = try string(sub)
                    case "username": keystone.username = try string(sub)
                    case "password": keystone.password = try string(sub)
                    case "user_domain": keystone.userDomain = try string(sub)
                    case "project": keystone.project = try string(sub)
                    case "project_domain": keystone.projectDomain = try string(sub)
                    case "application_credential_id": keystone.applicationCredentialID = try string(sub)
                    case "application_credential_secret": keystone.applicationCredentialSecret = try string(sub)
                    case "interface": keystone.interface = try string(sub)
                    case "region": keystone.region = try string(sub)
                    default:
                        throw unknown(sub, in: "keystone", known: [
                            "auth_url", "username", "password", "user_domain", "project", "project_domain",
                            "application_credential_id", "application_credential_secret", "interface", "region",
                        ])
                    }
                }
                guard !keystone.authURL.isEmpty else { throw error(field, "needs auth_url:, e.g. http://keystone:5000/v3") }
                let password = keystone.username != nil && keystone.password != nil && keystone.project != nil
                let appCredential = keystone.applicationCredentialID != nil && keystone.applicationCredentialSecret != nil
                guard password || appCredential else {
                    throw error(field, "needs username:, password: and project:, or application_credential_id: and application_credential_secret:")
                }
                cloud.keystone = keystone
            default:
                throw unknown(field, in: "clouds[]", known: [
                    "owner", "region", "glance_url", "service_token", "keystone", "ca_bundle", "client_certificate", "client_key", "insecure",
                ])
            }
        }
        guard cloud.owner.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }),
              cloud.region.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" }),
              !cloud.owner.isEmpty, !cloud.region.isEmpty
        else {
            throw ConfigurationError(path: path, line: fields.first?.line, message: "cloud owner and region may use letters, digits, - and . (the owner no _), as they form /clouds/OWNER_REGION")
        }
        return cloud
    }
}

/// `HOST:PORT`, `[IPv6]:PORT`.
public func parseHostPort(_ text: String) -> (String, Int)? {
    let host: Substring, port: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        port = text[text.index(close, offsetBy: 2)...]
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        port = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let number = Int(port), (0...65535).contains(number) else { return nil }
    return (String(host), number)
}

/// `20GiB`, `500MB`, `1.5TiB`, `1073741824` → bytes; nil for anything else, and for sizes of
/// 2^63 bytes (8 EiB) or more.
///
/// The cap is Glance's: an image's size is a BIGINT (`image_size_cap` stops at 2^63), and
/// Depot keeps sizes in SQLite integers and `off_t`. Below it, a limit plus a margin or the sum
/// of two sizes cannot overflow a `UInt64`, as one near 2^64 did (the Multicloud upload's
/// bound adds 1 MiB to `max_upload_size`).
public func parseSize(_ text: String) -> UInt64? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, Double)] = [
        ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
        ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("kB", 1e3), ("B", 1),
    ]
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        guard let number = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), number >= 0, number.isFinite else { return nil }
        let bytes = number * factor
        // 0x1p63 is 2^63 exactly; every Double below it converts to a UInt64 at most Int64.max.
        return bytes < 0x1p63 ? UInt64(bytes) : nil
    }
    guard let bytes = UInt64(trimmed), bytes <= UInt64(Int64.max) else { return nil }
    return bytes
}

/// `60s`, `5m`, `24h`, `7d`, `250ms`, or plain seconds.
public func parseDuration(_ text: String) -> Duration? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        let number = trimmed.dropLast(suffix.count)
        if suffix == "s" && number.hasSuffix("m") { continue }
        guard let value = Double(number), value >= 0, value.isFinite, value * factor < 1e10 else { return nil }
        // Rounded: 4007 * 0.001 * 1000 is 4006.9999999999995.
        return .milliseconds(Int64((value * factor * 1000).rounded()))
    }
    guard let seconds = Double(trimmed), seconds >= 0, seconds < 1e10 else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}
