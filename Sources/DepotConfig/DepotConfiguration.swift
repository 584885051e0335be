import Foundation

/// Everything `depot serve` needs, from the config file with command-line flags on top.
/// `config/depot.example.yaml` documents each key.
public struct DepotConfiguration: Sendable, Equatable {
    public var listenHost = "127.0.0.1"
    public var listenPort = 9494
    public var dataDirectory = "depot-data"
    public var logLevel = "info"
    /// The disk budget for blobs, in bytes; nil means no limit.
    public var cacheSize: UInt64?
    /// Eviction starts above this fraction of `cacheSize` and goes down to the low one.
    public var highWatermark = 0.95
    public var lowWatermark = 0.85
    /// Free space the data directory's filesystem must keep.
    public var minimumFreeDisk: UInt64?
    /// Bytes per second the background scrub re-hashes at most; 0 turns it off.
    public var scrubRate: UInt64 = 50_000_000
    /// A blob verified more recently than this is not scrubbed again (Ceph's
    /// `osd_deep_scrub_interval` is a week too).
    public var scrubInterval: Duration = .seconds(7 * 24 * 3600)
    public var adminToken: String?
    public var decisionTTL: Duration = .seconds(60)
    public var offlineGrace: Duration = .seconds(24 * 3600)
    public var clouds: [CloudConfiguration] = []
    /// `write-back` (acknowledge once durable locally) or `write-through` (once Glance has it).
    public var uploadMode = "write-back"
    /// The largest upload accepted; Glance's own `image_size_cap` default.
    public var maxUploadSize: UInt64 = 1 << 40
    /// Refuse uploads whose data is not of their `disk_format` (Glance's
    /// `[image_format] require_image_format_match`, default true).
    public var requireImageFormatMatch = true
    /// Safety checks that do not refuse an image detected as GPT (Glance's
    /// `[image_format] gpt_safety_checks_nonfatal`, default none).
    public var gptSafetyChecksNonfatal: [String] = []
    /// Pushes to backends running at once.
    public var pushConcurrency = 2
    /// The first retry delay of a failed push (doubled per attempt, with jitter) and the cap.
    public var pushInitialBackoff: Duration = .seconds(2)
    public var pushMaximumBackoff: Duration = .seconds(300)
    /// How long a request that needs Glance to hold an upload's bytes waits for their push.
    public var pushActionWait: Duration = .seconds(60)
    /// Connections open at once (503 beyond).
    public var maxConnections = 4096
    /// Time a connection has to send a complete request head (from its start or the previous
    /// response's end); slowloris clients and idle keep-alive connections are closed then.
    public var headerTimeout: Duration = .seconds(60)
    /// Time without traffic either way after which a connection is closed.
    public var idleTimeout: Duration = .seconds(120)
    /// Backend fills running at once (503 with Retry-After beyond).
    public var maxFills = 32
    /// Uploads received at once (503 with Retry-After beyond).
    public var maxUploads = 16
    /// The listener's TLS certificate chain and private key (PEM); both or neither.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Where the ONAP Multicloud route may write images (`imagePath`); nil turns it off.
    public var multicloudExportDirectory: String?

    public init() {}

    /// One backend cloud: where its Glance is and how Depot authenticates there.
    public struct CloudConfiguration: Sendable, Equatable {
        public var owner = "default"
        public var region = "RegionOne"
        public var glanceURL: String?
        public var serviceToken: String?
        public var keystone: KeystoneConfiguration?
        public var caBundle: String?
        /// A client certificate and its key (PEM) for backends that ask for one.
        public var clientCertificate: String?
        public var clientKey: String?
        public var insecure = false

        public init() {}

        /// The name in `/clouds/{owner}_{region}/…`.
        public var name: String { "\(owner)_\(region)" }
    }

    public struct KeystoneConfiguration: Sendable, Equatable {
        public var authURL = ""
        public var username: String?
        public var password: String?
        public var userDomain = "Default"
        public var project: String?
        public var projectDomain = "Default"
        public var applicationCredentialID: String?
        public var applicationCredentialSecret: String?
        public var interface = "public"
        public var region: String?
    }

    /// Reads a config file.
    public static func load(path: String) throws(ConfigurationError) -> DepotConfiguration {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigurationError(path: path, line: nil, message: "cannot read the file (\(error.localizedDescription)); check the path given to --config")
        }
        return try parse(text, path: path)
    }

    /// Parses config text; `path` only names the file in errors.
    public static func parse(_ text: String, path: String = "config") throws(ConfigurationError) -> DepotConfiguration {
        let root: YAMLValue
        do { root = try YAMLSubset.parse(text) } catch {
            throw ConfigurationError(path: path, line: error.line, message: error.message)
        }
        var config = DepotConfiguration()
        guard case let .map(entries) = root else {
            if root == .null { return config }
            throw ConfigurationError(path: path, line: 1, message: "the file must be a map of keys such as listen:, data_dir:, clouds:")
        }
        let reader = Reader(path: path)
        for entry in entries {
            switch entry.key {
            case "listen":
                (config.listenHost, config.listenPort) = try reader.hostPort(entry)
            case "data_dir": config.dataDirectory = try reader.string(entry)
            case "log_level": config.logLevel = try reader.logLevel(entry)
            case "admin_token": config.adminToken = try reader.string(entry)
            case "cache":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "size": config.cacheSize = try reader.size(sub)
                    case "high_watermark": config.highWatermark = try reader.fraction(sub)
                    case "low_watermark": config.lowWatermark = try reader.fraction(sub)
                    case "min_free_disk": config.minimumFreeDisk = try reader.size(sub)
                    case "scrub_rate": config.scrubRate = try reader.rate(sub)
                    case "scrub_interval": config.scrubInterval = try reader.duration(sub)
                    default:
                        throw reader.unknown(sub, in: "cache", known: ["size", "high_watermark", "low_watermark", "min_free_disk", "scrub_rate", "scrub_interval"])
                    }
                }
            case "auth":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "decision_ttl": config.decisionTTL = try reader.duration(sub)
                    case "offline_grace": config.offlineGrace = try reader.duration(sub)
                    default: throw reader.unknown(sub, in: "auth", known: ["decision_ttl", "offline_grace"])
                    }
                }
            case "upload_mode":
                let mode = try reader.string(entry)
                guard mode == "write-back" || mode == "write-through" else {
                    throw ConfigurationError(path: path, line: entry.line, message: "upload_mode must be write-back or write-through, got \(mode)")
                }
                config.uploadMode = mode
            case "max_upload_size": config.maxUploadSize = try reader.size(entry)
            case "image_format":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "require_image_format_match": config.requireImageFormatMatch = try reader.bool(sub)
                    case "gpt_safety_checks_nonfatal": config.gptSafetyChecksNonfatal = try reader.list(sub)
                    default: throw reader.unknown(sub, in: "image_format", known: ["require_image_format_match", "gpt_safety_checks_nonfatal"])
                    }
                }
            case "push":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "concurrency": config.pushConcurrency = try reader.positiveInteger(sub)
                    case "initial_backoff": config.pushInitialBackoff = try reader.duration(sub)
                    case "max_backoff": config.pushMaximumBackoff = try reader.duration(sub)
                    case "action_wait": config.pushActionWait = try reader.positiveDuration(sub)
                    default: throw reader.unknown(sub, in: "push", known: ["concurrency", "initial_backoff", "max_backoff", "action_wait"])
                    }
                }
            case "limits":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "max_connections": config.maxConnections = try reader.positiveInteger(sub)
                    case "header_timeout": config.headerTimeout = try reader.positiveDuration(sub)
                    case "idle_timeout": config.idleTimeout = try reader.positiveDuration(sub)
                    case "max_fills": config.maxFills = try reader.positiveInteger(sub)
                    case "max_uploads": config.maxUploads = try reader.positiveInteger(sub)
                    default:
                        throw reader.unknown(sub, in: "limits", known: ["max_connections", "header_timeout", "idle_timeout", "max_fills", "max_uploads"])
                    }
                }
            case "tls":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "certificate": config.tlsCertificate = try reader.string(sub)
                    case "key": config.tlsKey = try reader.string(sub)
                    default: throw reader.unknown(sub, in: "tls", known: ["certificate", "key"])
                    }
                }
                guard (config.tlsCertificate == nil) == (config.tlsKey == nil) else {
                    throw ConfigurationError(path: path, line: entry.line, message: "tls: needs both certificate: and key: (PEM files)")
                }
            case "multicloud":
                for sub in try reader.map(entry) {
                    switch sub.key {
                    case "export_dir":
                        let directory = try reader.string(sub)
                        guard directory.hasPrefix("/") else { throw reader.error(sub, "expected an absolute path, e.g. /srv/depot-export") }
                        config.multicloudExportDirectory = directory
                    default: throw reader.unknown(sub, in: "multicloud", known: ["export_dir"])
                    }
                }
            case "clouds":
                guard case let .list(items) = entry.value else {
                    throw ConfigurationError(path: path, line: entry.line, message: "clouds: must be a list of clouds (- owner: ...)")
                }
                for item in items {
                    guard case let .map(fields) = item else {
                        throw ConfigurationError(path: path, line: entry.line, message: "each cloud must be a map with owner:, region:, glance_url:")
                    }
                    config.clouds.append(try reader.cloud(fields))
                }
            default:
                throw reader.unknown(entry, in: nil, known: [
                    "listen", "data_dir", "log_level", "admin_token", "cache", "auth", "upload_mode", "max_upload_size", "image_format", "push",
                    "limits", "tls", "multicloud", "clouds",
                ])
            }
        }
        guard config.lowWatermark <= config.highWatermark else {
            throw ConfigurationError(path: path, line: nil, message: "cache.low_watermark (\(config.lowWatermark)) must not be above cache.high_watermark (\(config.highWatermark))")
        }
        var seen: Set<String> = []
        for cloud in config.clouds where !seen.insert(cloud.name).inserted {
            throw ConfigurationError(path: path, line: nil, message: "two clouds are named \(cloud.name); owner and region must differ")
        }
        return config
    }

    /// Checks that the configuration can run; the message says what to add.
    public func validate() throws(ConfigurationError) {
        guard !clouds.isEmpty else {
            throw ConfigurationError(path: "configuration", line: nil, message: "no backend Glance: give --glance-url URL or a clouds: list in the config file")
        }
        for cloud in clouds {
            if cloud.glanceURL == nil && cloud.keystone == nil {
                throw ConfigurationError(path: "configuration", line: nil, message: "cloud \(cloud.name) needs glance_url: or keystone: (to find Glance in the catalog)")
            }
            if let url = cloud.glanceURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                throw ConfigurationError(path: "configuration", line: nil, message: "cloud \(cloud.name): glance_url must start with http:// or https://, got \(url)")
            }
        }
    }
}

/// A config problem, with the file and line, and what to change.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    public let path: String
    public let line: Int?
    public let message: String

    public var description: String {
        "\(path)\(line.map { " line \($0)" } ?? ""): \(message)"
    }
}

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
        guard let bytes = parseSize(try string(entry)) else { throw error(entry, "expected a size such as 20GiB, 500MB or 1073741824") }
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

/// `20GiB`, `500MB`, `1.5TiB`, `1073741824` → bytes.
public func parseSize(_ text: String) -> UInt64? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, Double)] = [
        ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
        ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("kB", 1e3), ("B", 1),
    ]
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        guard let number = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), number >= 0, number.isFinite else { return nil }
        let bytes = number * factor
        return bytes < 1.8e19 ? UInt64(bytes) : nil
    }
    return UInt64(trimmed)
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
