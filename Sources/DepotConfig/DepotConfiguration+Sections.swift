import Foundation

// One reader per section of the config file: each takes the section's entries, sets its
// fields and refuses a key it does not know, naming the keys it does.
extension DepotConfiguration {
    mutating func readCache(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "size": cacheSize = try reader.size(sub)
            case "high_watermark": highWatermark = try reader.fraction(sub)
            case "low_watermark": lowWatermark = try reader.fraction(sub)
            case "min_free_disk": minimumFreeDisk = try reader.size(sub)
            case "scrub_rate": scrubRate = try reader.rate(sub)
            case "scrub_interval": scrubInterval = try reader.duration(sub)
            default:
                throw reader.unknown(sub, in: "cache", known: ["size", "high_watermark", "low_watermark", "min_free_disk", "scrub_rate", "scrub_interval"])
            }
        }
    }

    mutating func readAuth(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "decision_ttl": decisionTTL = try reader.duration(sub)
            case "offline_grace": offlineGrace = try reader.duration(sub)
            default: throw reader.unknown(sub, in: "auth", known: ["decision_ttl", "offline_grace"])
            }
        }
    }

    mutating func readImageFormat(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "require_image_format_match": requireImageFormatMatch = try reader.bool(sub)
            case "gpt_safety_checks_nonfatal": gptSafetyChecksNonfatal = try reader.list(sub)
            default: throw reader.unknown(sub, in: "image_format", known: ["require_image_format_match", "gpt_safety_checks_nonfatal"])
            }
        }
    }

    mutating func readPush(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "concurrency": pushConcurrency = try reader.positiveInteger(sub)
            case "initial_backoff": pushInitialBackoff = try reader.duration(sub)
            case "max_backoff": pushMaximumBackoff = try reader.duration(sub)
            case "action_wait": pushActionWait = try reader.positiveDuration(sub)
            default: throw reader.unknown(sub, in: "push", known: ["concurrency", "initial_backoff", "max_backoff", "action_wait"])
            }
        }
    }

    mutating func readLimits(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "max_connections": maxConnections = try reader.positiveInteger(sub)
            case "header_timeout": headerTimeout = try reader.positiveDuration(sub)
            case "idle_timeout": idleTimeout = try reader.positiveDuration(sub)
            case "response_wait_timeout": responseWaitTimeout = try reader.positiveDuration(sub)
            case "max_fills": maxFills = try reader.positiveInteger(sub)
            case "max_uploads": maxUploads = try reader.positiveInteger(sub)
            default:
                throw reader.unknown(sub, in: "limits", known: ["max_connections", "header_timeout", "idle_timeout", "response_wait_timeout", "max_fills", "max_uploads"])
            }
        }
    }

    mutating func readTLS(_ entry: Reader.Entry, _ reader: Reader) throws(ConfigurationError) {
        for sub in try reader.map(entry) {
            switch sub.key {
            case "certificate": tlsCertificate = try reader.string(sub)
            case "key": tlsKey = try reader.string(sub)
            default: throw reader.unknown(sub, in: "tls", known: ["certificate", "key"])
            }
        }
        guard (tlsCertificate == nil) == (tlsKey == nil) else {
            throw ConfigurationError(path: reader.path, line: entry.line, message: "tls: needs both certificate: and key: (PEM files)")
        }
    }

    mutating func readMulticloud(_ entries: [Reader.Entry], _ reader: Reader) throws(ConfigurationError) {
        for sub in entries {
            switch sub.key {
            case "export_dir":
                let directory = try reader.string(sub)
                guard directory.hasPrefix("/") else { throw reader.error(sub, "expected an absolute path, e.g. /srv/depot-export") }
                multicloudExportDirectory = directory
            default: throw reader.unknown(sub, in: "multicloud", known: ["export_dir"])
            }
        }
    }

    mutating func readClouds(_ entry: Reader.Entry, _ reader: Reader) throws(ConfigurationError) {
        guard case let .list(items) = entry.value else {
            throw ConfigurationError(path: reader.path, line: entry.line, message: "clouds: must be a list of clouds (- owner: ...)")
        }
        for item in items {
            guard case let .map(fields) = item else {
                throw ConfigurationError(path: reader.path, line: entry.line, message: "each cloud must be a map with owner:, region:, glance_url:")
            }
            clouds.append(try reader.cloud(fields))
        }
    }
}
