@testable import DepotConfig

extension ConfigGenerator {
    /// Puts one mistake into the configuration; returns the entry it is on.
    static func injectMistake(_ config: inout GeneratedConfiguration, rng: inout some RandomNumberGenerator) -> (entryID: Int, what: String)? {
        let badValues: [String: [String]] = [
            "listen": ["nohost", "host:99999", "[::1]9494", ":80", "host:port"], "log_level": ["loud", "informational"],
            "upload_mode": ["write-around", "Write-Back"], "max_upload_size": ["12XB", "-1", "1.5.5GB", "GiB", "nan GB", "1e30", "18446744073709551615", "9223372036854775808"],
            "size": ["12XB", "-5MB", "infGiB", "16777216TiB"], "min_free_disk": ["lots"], "high_watermark": ["150%", "0", "abc", "-0.5", "nan"],
            "low_watermark": ["0%", "2"], "decision_ttl": ["5 parsecs", "-1s", "1e20s", "s"], "offline_grace": ["forever"],
            "concurrency": ["0", "-3", "many", "1.5"], "initial_backoff": ["soon"], "max_backoff": ["-5m"], "insecure": ["maybe", "1"],
            "max_connections": ["0", "lots"], "header_timeout": ["0s", "0"], "idle_timeout": ["0ms"], "response_wait_timeout": ["-1s"], "max_fills": ["-1"],
        ]
        // Collect the entries a mistake can go on: (path to the entry, key).
        var targets: [(path: [Int], key: String, isMap: Bool)] = []
        func walk(_ entries: [YEntry], path: [Int]) {
            for (index, entry) in entries.enumerated() {
                if case .scalar = entry.value, badValues[entry.key] != nil { targets.append((path + [index], entry.key, false)) }
                if case let .map(children) = entry.value {
                    targets.append((path + [index], entry.key, true))
                    walk(children, path: path + [index])
                }
                if case let .list(items) = entry.value {
                    for (itemIndex, item) in items.enumerated() {
                        if case let .map(children) = item { walk(children, path: path + [index, -1 - itemIndex]) }
                    }
                }
            }
        }
        walk(config.entries, path: [])
        let unknownID = YAMLTreeGenerator.newID()
        if targets.isEmpty || rng.chance(0.3) {
            config.entries.insert(YEntry(key: rng.pick(["colour", "cache_size", "listen_port", "Listen"]), value: .scalar("x"), id: unknownID), at: rng.below(config.entries.count + 1))
            return (unknownID, "an unknown top-level key")
        }
        let target = rng.pick(targets)
        var found: (Int, String)?
        func edit(_ entries: inout [YEntry], _ path: ArraySlice<Int>) {
            let index = path.first!
            if path.count == 1 {
                if target.isMap {
                    if case var .map(children) = entries[index].value {
                        children.insert(YEntry(key: "unknown_key", value: .scalar("1"), id: unknownID), at: rng.below(children.count + 1))
                        entries[index].value = .map(children)
                        found = (unknownID, "an unknown key under \(target.key)")
                    }
                } else {
                    entries[index].value = .scalar(rng.pick(badValues[target.key]!))
                    found = (entries[index].id, "a bad \(target.key)")
                }
                return
            }
            let next = path.dropFirst()
            if next.first! < 0 {
                let itemIndex = -1 - next.first!
                if case var .list(items) = entries[index].value, case var .map(children) = items[itemIndex] {
                    edit(&children, next.dropFirst())
                    items[itemIndex] = .map(children)
                    entries[index].value = .list(items)
                }
            } else if case var .map(children) = entries[index].value {
                edit(&children, next)
                entries[index].value = .map(children)
            }
        }
        edit(&config.entries, target.path[...])
        return found
    }
}
