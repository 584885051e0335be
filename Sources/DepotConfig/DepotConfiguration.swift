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
    /// The longest a client with its whole request sent waits on Depot with nothing to read.
    public var responseWaitTimeout: Duration = .seconds(300)
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
        do { root = try YAMLValue.parse(text) } catch {
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
            case "cache": try config.readCache(reader.map(entry), reader)
            case "auth": try config.readAuth(reader.map(entry), reader)
            case "upload_mode":
                let mode = try reader.string(entry)
                guard mode == "write-back" || mode == "write-through" else {
                    throw ConfigurationError(path: path, line: entry.line, message: "upload_mode must be write-back or write-through, got \(mode)")
                }
                config.uploadMode = mode
            case "max_upload_size": config.maxUploadSize = try reader.size(entry)
            case "image_format": try config.readImageFormat(reader.map(entry), reader)
            case "push": try config.readPush(reader.map(entry), reader)
            case "limits": try config.readLimits(reader.map(entry), reader)
            case "tls": try config.readTLS(entry, reader)
            case "multicloud": try config.readMulticloud(reader.map(entry), reader)
            case "clouds": try config.readClouds(entry, reader)
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
