import DepotTestSupport
import Foundation

@testable import DepotConfig

struct GeneratedConfiguration {
    var expected = DepotConfiguration()
    var entries: [YEntry] = []
}

enum ConfigGenerator {
    static let interesting: [[UInt8]] = [":", ": ", "- ", "\t", "\"", "'", "#", " #", "\r\n", "\n", "  ", "[", "{", "&", "\\", "---"].map { Array($0.utf8) }

    static func entry(_ key: String, _ value: YTree) -> YEntry { YEntry(key: key, value: value, id: YAMLTreeGenerator.newID()) }

    static func text(_ rng: inout some RandomNumberGenerator) -> String {
        let pieces = ["a", "Z", "0", "-", "_", ".", "/", " ", "é", "日本", "🚀", "#", "'", "\"", ":", "\\", "x y", "%", "$", "="]
        var value = (0..<rng.int(1...16)).map { _ in rng.pick(pieces) }.joined()
        if rng.chance(0.5) { value = value.trimmingCharacters(in: .whitespaces) }
        return value.isEmpty ? "v" : value
    }

    static func size(_ rng: inout some RandomNumberGenerator) -> (String, UInt64) {
        let n = UInt64(rng.int(0...100_000))
        let units: [(String, UInt64)] = [
            ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000),
            ("KB", 1000), ("kB", 1000), ("B", 1),
        ]
        switch rng.below(6) {
        case 0: return (String(n), n)
        case 1:
            // Below 2^63, the largest size a configuration takes (`parseSize`).
            let big = rng.next() >> UInt64(rng.int(1...40))
            return (String(big), big)
        case 2:
            let (unit, factor) = rng.pick(units.prefix(4))
            return ("\(n).5\(unit)", n * factor + factor / 2)
        default:
            let (unit, factor) = rng.pick(units)
            return ("\(n)\(rng.pick(["", "", " "]))\(unit)", n * factor)
        }
    }

    static func duration(_ rng: inout some RandomNumberGenerator) -> (String, Duration) {
        let n = Int64(rng.int(0...100_000))
        let (unit, ms): (String, Int64) = rng.pick([("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("", 1000)])
        return ("\(n)\(unit)", .milliseconds(n * ms))
    }

    static func fractionText(_ rng: inout some RandomNumberGenerator, percent: Int) -> (String, Double) {
        if rng.chance(0.5) { return ("\(percent)%", Double(percent) / 100) }
        let text = percent == 100 ? rng.pick(["1", "1.0"]) : String(format: "0.%02d", percent)
        return (text, Double(text)!)
    }

    static func bool(_ rng: inout some RandomNumberGenerator) -> (String, Bool) {
        let value = rng.chance(0.5)
        let text = rng.pick(value ? ["true", "yes", "on"] : ["false", "no", "off"])
        return (rng.chance(0.2) ? text.uppercased() : text, value)
    }

    static func name(_ rng: inout some RandomNumberGenerator, region: Bool) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-." + (region ? "_" : ""))
        if rng.chance(0.05) { return rng.pick(["Ωmega", "région", "東京"]) }
        return String((0..<rng.int(1...12)).map { _ in rng.pick(alphabet) })
    }

    static func configuration(_ rng: inout some RandomNumberGenerator) -> GeneratedConfiguration {
        var out = GeneratedConfiguration()
        var entries = scalarSettings(&rng, &out.expected)
        for section in [cacheSection(&rng, &out.expected), authSection(&rng, &out.expected), pushSection(&rng, &out.expected),
                        limitsSection(&rng, &out.expected), cloudsSection(&rng, &out.expected)] {
            if let section { entries.append(section) }
        }
        out.entries = entries.shuffled(using: &rng)
        return out
    }

    /// The top-level settings that are one scalar (and tls, a pair of them).
    static func scalarSettings(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> [YEntry] {
        var entries: [YEntry] = []
        if rng.chance(0.5) {
            let port = rng.int(0...65535)
            let (hostText, host) = rng.pick([("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("localhost", "localhost"), ("[::1]", "::1"), ("[fe80::1%eth0]", "fe80::1%eth0"), ("::1", "::1"), ("depot.example", "depot.example")])
            entries.append(entry("listen", .scalar("\(hostText):\(port)")))
            (expected.listenHost, expected.listenPort) = (host, port)
        }
        if rng.chance(0.5) {
            let value = text(&rng)
            entries.append(entry("data_dir", .scalar(value)))
            expected.dataDirectory = value
        }
        if rng.chance(0.4) {
            let level = rng.pick(["trace", "debug", "info", "notice", "warning", "error", "critical"])
            entries.append(entry("log_level", .scalar(rng.chance(0.2) ? level.uppercased() : level)))
            expected.logLevel = level
        }
        if rng.chance(0.3) {
            let value = text(&rng)
            entries.append(entry("admin_token", .scalar(value)))
            expected.adminToken = value
        }
        if rng.chance(0.3) {
            let mode = rng.pick(["write-back", "write-through"])
            entries.append(entry("upload_mode", .scalar(mode)))
            expected.uploadMode = mode
        }
        if rng.chance(0.3) {
            let (text, bytes) = size(&rng)
            entries.append(entry("max_upload_size", .scalar(text)))
            expected.maxUploadSize = bytes
        }
        if rng.chance(0.15) {
            let (certificate, key) = (text(&rng), text(&rng))
            entries.append(entry("tls", .map([entry("certificate", .scalar(certificate)), entry("key", .scalar(key))].shuffled(using: &rng))))
            (expected.tlsCertificate, expected.tlsKey) = (certificate, key)
        }
        return entries
    }

    static func cacheSection(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> YEntry? {
        guard rng.chance(0.5) else { return nil }
        var cache: [YEntry] = []
        if rng.chance(0.7) {
            let (text, bytes) = size(&rng)
            cache.append(entry("size", .scalar(text)))
            expected.cacheSize = bytes
        }
        if rng.chance(0.5) {
            let high = rng.int(1...100), low = rng.int(1...high)
            let (highText, highValue) = fractionText(&rng, percent: high), (lowText, lowValue) = fractionText(&rng, percent: low)
            cache.append(entry("high_watermark", .scalar(highText)))
            cache.append(entry("low_watermark", .scalar(lowText)))
            (expected.highWatermark, expected.lowWatermark) = (highValue, lowValue)
        }
        if rng.chance(0.4) {
            let (text, bytes) = size(&rng)
            cache.append(entry("min_free_disk", .scalar(text)))
            expected.minimumFreeDisk = bytes
        }
        cache.shuffle(using: &rng)
        return entry("cache", cache.isEmpty ? .null : .map(cache))
    }

    static func authSection(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> YEntry? {
        guard rng.chance(0.4) else { return nil }
        let auth = [
            durationEntry(0.6, "decision_ttl", \.decisionTTL, &rng, &expected), durationEntry(0.6, "offline_grace", \.offlineGrace, &rng, &expected),
        ].compactMap { $0 }
        return entry("auth", auth.isEmpty ? .null : .map(auth))
    }

    static func pushSection(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> YEntry? {
        guard rng.chance(0.3) else { return nil }
        var push: [YEntry] = []
        if rng.chance(0.6) {
            let value = rng.int(1...64)
            push.append(entry("concurrency", .scalar(rng.chance(0.1) ? "0\(value)" : String(value))))
            expected.pushConcurrency = value
        }
        push += [
            durationEntry(0.5, "initial_backoff", \.pushInitialBackoff, &rng, &expected),
            durationEntry(0.5, "max_backoff", \.pushMaximumBackoff, &rng, &expected),
        ].compactMap { $0 }
        return entry("push", push.isEmpty ? .null : .map(push))
    }

    static func limitsSection(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> YEntry? {
        guard rng.chance(0.3) else { return nil }
        var limits: [YEntry] = []
        if rng.chance(0.5) {
            let value = rng.int(1...100_000)
            limits.append(entry("max_connections", .scalar(String(value))))
            expected.maxConnections = value
        }
        // Timeouts must be positive.
        limits += [
            durationEntry(0.5, "header_timeout", \.headerTimeout, &rng, &expected, zero: ("1s", .seconds(1))),
            durationEntry(0.5, "idle_timeout", \.idleTimeout, &rng, &expected, zero: ("2m", .seconds(120))),
            durationEntry(0.5, "response_wait_timeout", \.responseWaitTimeout, &rng, &expected, zero: ("5m", .seconds(300))),
        ].compactMap { $0 }
        if rng.chance(0.5) {
            let value = rng.int(1...512)
            limits.append(entry("max_fills", .scalar(String(value))))
            expected.maxFills = value
        }
        return entry("limits", limits.isEmpty ? .null : .map(limits))
    }

    /// With probability `p`, a `key: duration` entry, its value set at `field` (`zero` in
    /// place of a zero duration, where zero is refused).
    static func durationEntry(
        _ p: Double, _ key: String, _ field: WritableKeyPath<DepotConfiguration, Duration>, _ rng: inout some RandomNumberGenerator,
        _ expected: inout DepotConfiguration, zero: (String, Duration)? = nil
    ) -> YEntry? {
        guard rng.chance(p) else { return nil }
        var (text, value) = duration(&rng)
        if value == .zero, let zero { (text, value) = zero }
        expected[keyPath: field] = value
        return entry(key, .scalar(text))
    }

    static func cloudsSection(_ rng: inout some RandomNumberGenerator, _ expected: inout DepotConfiguration) -> YEntry? {
        guard rng.chance(0.6) else { return nil }
        var names: Set<String> = []
        var items: [YTree] = []
        for _ in 0..<rng.int(1...3) {
            var cloud = DepotConfiguration.CloudConfiguration()
            var fields: [YEntry] = []
            if rng.chance(0.8) {
                cloud.owner = name(&rng, region: false)
                fields.append(entry("owner", .scalar(cloud.owner)))
            }
            if rng.chance(0.8) {
                cloud.region = name(&rng, region: true)
                fields.append(entry("region", .scalar(cloud.region)))
            }
            guard names.insert(cloud.name).inserted else { continue }
            if rng.chance(0.8) {
                let url = "http\(rng.chance(0.5) ? "s" : "")://10.0.\(rng.below(256)).\(rng.below(256)):\(rng.int(1...65535))\(rng.chance(0.3) ? "/image" : "")"
                fields.append(entry("glance_url", .scalar(url + String(repeating: "/", count: rng.smallCount(max: 3)))))
                cloud.glanceURL = url
            }
            if rng.chance(0.3) {
                let token = text(&rng)
                fields.append(entry("service_token", .scalar(token)))
                cloud.serviceToken = token
            }
            if rng.chance(0.2) {
                let path = text(&rng)
                fields.append(entry("ca_bundle", .scalar(path)))
                cloud.caBundle = path
            }
            if rng.chance(0.1) {
                let (certificate, key) = (text(&rng), text(&rng))
                fields.append(entry("client_certificate", .scalar(certificate)))
                fields.append(entry("client_key", .scalar(key)))
                (cloud.clientCertificate, cloud.clientKey) = (certificate, key)
            }
            if rng.chance(0.3) {
                let (text, value) = bool(&rng)
                fields.append(entry("insecure", .scalar(text)))
                cloud.insecure = value
            }
            if rng.chance(0.3) {
                let (field, keystone) = keystone(&rng)
                fields.append(field)
                cloud.keystone = keystone
            }
            if fields.isEmpty { fields.append(entry("owner", .scalar(cloud.owner))) }
            items.append(.map(fields.shuffled(using: &rng)))
            expected.clouds.append(cloud)
        }
        return items.isEmpty ? nil : entry("clouds", .list(items))
    }

    /// A cloud's keystone block: a password or an application credential, and the options.
    static func keystone(_ rng: inout some RandomNumberGenerator) -> (YEntry, DepotConfiguration.KeystoneConfiguration) {
        var keystone = DepotConfiguration.KeystoneConfiguration()
        keystone.authURL = "http://keystone:\(rng.int(1...65535))/v3"
        var sub = [entry("auth_url", .scalar(keystone.authURL))]
        if rng.chance(0.5) {
            (keystone.username, keystone.password, keystone.project) = (text(&rng), text(&rng), text(&rng))
            sub += [entry("username", .scalar(keystone.username!)), entry("password", .scalar(keystone.password!)), entry("project", .scalar(keystone.project!))]
        } else {
            (keystone.applicationCredentialID, keystone.applicationCredentialSecret) = (text(&rng), text(&rng))
            sub += [entry("application_credential_id", .scalar(keystone.applicationCredentialID!)), entry("application_credential_secret", .scalar(keystone.applicationCredentialSecret!))]
        }
        if rng.chance(0.3) {
            keystone.userDomain = text(&rng)
            sub.append(entry("user_domain", .scalar(keystone.userDomain)))
        }
        if rng.chance(0.3) {
            keystone.projectDomain = text(&rng)
            sub.append(entry("project_domain", .scalar(keystone.projectDomain)))
        }
        if rng.chance(0.3) {
            keystone.interface = rng.pick(["public", "internal", "admin"])
            sub.append(entry("interface", .scalar(keystone.interface)))
        }
        if rng.chance(0.3) {
            keystone.region = text(&rng)
            sub.append(entry("region", .scalar(keystone.region!)))
        }
        return (entry("keystone", .map(sub.shuffled(using: &rng))), keystone)
    }
}
