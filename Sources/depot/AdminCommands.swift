import ArgumentParser
import BlobStore
import Cache
import Catalog
import Foundation
import Glance

/// How an admin command reaches Depot: the running server's admin API, or (where a command
/// allows it) the data directory of a stopped one.
struct AdminTarget: ParsableArguments {
    @Option(help: "The running Depot (default: $DEPOT_URL or http://127.0.0.1:9494).")
    var url: String?

    @Option(name: .customLong("admin-token"), help: "The admin token (default: $DEPOT_ADMIN_TOKEN).")
    var adminToken: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    var endpoint: String {
        let value = url ?? ProcessInfo.processInfo.environment["DEPOT_URL"] ?? "http://127.0.0.1:9494"
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }

    var token: String? { adminToken ?? ProcessInfo.processInfo.environment["DEPOT_ADMIN_TOKEN"] }

    /// A `--url` that ends in `/v2` (Glance's API root, an easy slip when copying
    /// OS_IMAGE_URL) makes every admin path a Glance path: say so before calling.
    static func urlMistake(_ endpoint: String) -> String? {
        let path = endpoint.split(separator: "/", omittingEmptySubsequences: true).dropFirst(2)
        guard let last = path.last, last == "v2" || last.hasPrefix("v2.") else { return nil }
        let base = endpoint.dropLast(last.count + 1)
        return "--url \(endpoint) ends in /\(last), which is the image API's root; give Depot's own address without it, e.g. --url \(base)"
    }

    /// Calls the admin API and decodes its JSON answer; errors say what to do.
    func call(_ method: String, _ path: String) async throws -> Any {
        if let mistake = Self.urlMistake(endpoint) { throw CLIError(mistake) }
        let client = GlanceClient(configuration: GlanceClientConfiguration(endpoint: endpoint, credentials: .none))
        var headers: [(String, String)] = [("Accept", "application/json")]
        if let token { headers.append(("X-Auth-Token", token)) }
        let answer: ForwardedResponse
        do {
            answer = try await client.forward(method: method, pathAndQuery: path, headers: headers, body: method == "GET" || method == "DELETE" ? nil : .bytes([]))
        } catch {
            throw CLIError("cannot reach Depot at \(endpoint) (\(error)); is it running? Pass --url, or --data-dir where the command allows it")
        }
        var bytes: [UInt8] = []
        for try await chunk in answer.body { bytes += chunk }
        let decoded: Any? = bytes.isEmpty ? nil : try? JSONSerialization.jsonObject(with: Data(bytes))
        let object: Any = decoded ?? [String: Any]()
        guard (200..<300).contains(answer.head.status) else {
            let message = ((object as? [String: Any])?["error"] as? [String: Any])?["message"] as? String ?? String(decoding: bytes, as: UTF8.self)
            if answer.head.status == 401 || answer.head.status == 403 {
                guard let token, !token.isEmpty else {
                    throw CLIError("Depot refused the admin call (\(answer.head.status)) without a token: pass --admin-token or set DEPOT_ADMIN_TOKEN")
                }
                let origin = adminToken != nil ? "--admin-token" : "DEPOT_ADMIN_TOKEN"
                throw CLIError(
                    "Depot at \(endpoint) answered \(answer.head.status): the token was refused (from \(origin)). Give the admin_token this Depot was started with (--admin-token of depot serve), or a Keystone token with the admin role")
            }
            throw CLIError("Depot answered \(answer.head.status): \(message)")
        }
        return object
    }

    func printJSON(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }
}

/// Prints label/value rows, the labels aligned, without a header.
func printRows(_ rows: [[String]]) {
    let width = rows.map { $0.first?.count ?? 0 }.max() ?? 0
    for row in rows {
        print((row.first ?? "").padding(toLength: width, withPad: " ", startingAt: 0) + "  " + row.dropFirst().joined(separator: "  "))
    }
}

/// Prints rows as an aligned table.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

func formatDate(_ seconds: Double) -> String {
    seconds <= 0 ? "-" : ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: seconds))
}

/// `depot cache …`: what is cached, and the operator's levers.
struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "List, prefetch, pin, evict and prune cached images.",
        subcommands: [List.self, Stats.self, Prefetch.self, Evict.self, Pin.self, Unpin.self, Prune.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Blobs by least recent use, with their images.")
        @OptionGroup var target: AdminTarget
        @Option(name: .customLong("data-dir"), help: "Read a stopped Depot's data directory instead of asking the server.")
        var dataDir: String?

        func run() async throws {
            let blobs: [[String: Any]]
            if let dataDir {
                let lock = try lockDataDirectory(dataDir, .shared)
                defer { withExtendedLifetime(lock) {} }
                blobs = try BlobInventory.all(in: openCatalog(dataDir)).map(\.json)
            } else {
                blobs = (try await target.call("GET", "/depot/v1/blobs") as? [String: Any])?["blobs"] as? [[String: Any]] ?? []
            }
            if target.json { return target.printJSON(["blobs": blobs]) }
            printTable(
                ["SHA256", "SIZE", "HITS", "LAST ACCESS", "PINNED", "IMAGES"],
                blobs.map { blob in
                    let images = (blob["images"] as? [[String: Any]] ?? []).map { "\($0["cloud"] ?? "")/\($0["image_id"] ?? "")" }
                    return [
                        String((blob["sha256"] as? String ?? "").prefix(16)), formatBytes(UInt64(blob["size"] as? Int ?? 0)), "\(blob["hits"] ?? 0)",
                        formatDate(blob["last_access"] as? Double ?? 0), (blob["pinned"] as? Bool ?? false) ? "yes" : "", images.joined(separator: ", "),
                    ]
                })
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Budget, use, hit ratio, bytes by source, evictions, pushes.")
        @OptionGroup var target: AdminTarget

        func run() async throws {
            let stats = try await target.call("GET", "/depot/v1/stats") as? [String: Any] ?? [:]
            if target.json { return target.printJSON(stats) }
            func bytes(_ key: String) -> String { (stats[key] as? Int).map { formatBytes(UInt64($0)) } ?? "-" }
            let budget = (stats["budget_bytes"] as? Int).map { formatBytes(UInt64($0)) }
                ?? "none (no cache.size or --cache-size: blobs stay until evicted by hand or for cache.min_free_disk)"
            printRows([
                ["budget", budget], ["used", bytes("used_bytes")], ["reserved", bytes("reserved_bytes")],
                ["free on disk", bytes("free_disk_bytes")], ["blobs", "\(stats["blobs"] ?? 0)"], ["pinned", "\(stats["pinned_blobs"] ?? 0)"],
                ["hits / misses / shared", "\(stats["hits"] ?? 0) / \(stats["misses"] ?? 0) / \(stats["shared_fills"] ?? 0)"],
                ["hit ratio", String(format: "%.3f", stats["hit_ratio"] as? Double ?? 0)],
                ["served from cache", bytes("bytes_served_from_cache")], ["served from backend", bytes("bytes_served_from_backend")],
                ["evictions", "\(stats["evictions"] ?? 0) (\(bytes("evicted_bytes")))"],
                ["pushes", ((stats["pushes"] as? [String: Any]) ?? [:]).map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")],
                ["push failures after ack", "\(stats["push_failures_after_ack"] ?? 0)"],
                ["scrub verified", "\(bytes("scrub_verified_bytes")) in \(stats["scrub_verified_blobs"] ?? 0) blobs"],
                ["scrub findings", Self.counts(stats["scrub_findings"])],
                ["quarantined", Self.counts(stats["quarantined_blobs"]) + " (uploads lost: \(stats["uploads_lost_to_damage"] ?? 0))"],
            ])
        }

        /// `{"size": 1, "digest": 0}` as "digest 0, size 1".
        static func counts(_ value: Any?) -> String {
            ((value as? [String: Any]) ?? [:]).map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")
        }
    }

    struct Prefetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cache images now (Depot's service credentials) and wait until they are cached.",
            discussion: "Shows a progress bar with the rate and time left on a terminal, plain lines otherwise. Exits 1 if an image could not be cached.")
        @OptionGroup var target: AdminTarget
        @Option(help: "The cloud, OWNER_REGION (default: default_RegionOne).") var cloud = "default_RegionOne"
        @Flag(help: "Start the fills and return without waiting for them.") var noWait = false
        @Argument(help: "Image ids.") var images: [String]

        func run() async throws {
            for id in images {
                let answer = try await target.call("PUT", "/depot/v1/images/\(cloud)/\(id)") as? [String: Any] ?? [:]
                if noWait { print("\(id)  \(answer["state"] ?? "?")") }
            }
            if noWait { return }
            let progress = Progress(label: "prefetch")
            var states: [String: [String: Any]] = [:]
            while true {
                for id in images where states[id]?["state"] as? String != "cached" && states[id]?["state"] as? String != "not cached" {
                    states[id] = try await target.call("GET", "/depot/v1/images/\(cloud)/\(id)") as? [String: Any] ?? [:]
                }
                func sum(_ key: String) -> UInt64 { images.reduce(0) { $0 + UInt64(states[$1]?[key] as? Int ?? 0) } }
                let settled = images.filter { ["cached", "not cached"].contains(states[$0]?["state"] as? String ?? "") }.count
                progress.update(done: sum("written"), total: sum("size"), note: "\(settled) of \(images.count) images")
                if settled == images.count { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            progress.finish(note: "\(images.count) images")
            var failed = false
            for id in images {
                if states[id]?["state"] as? String == "cached" {
                    print("\(id)  cached  \(formatBytes(UInt64(states[id]?["size"] as? Int ?? 0)))")
                } else {
                    failed = true
                    print("\(id)  not cached: its fill failed; Depot's log says why (depot.cache, \"fill failed\")")
                }
            }
            if failed { throw ExitCode(1) }
        }
    }

    struct Evict: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove blobs now (not pinned ones, nor ones waiting for a push).")
        @OptionGroup var target: AdminTarget
        @Argument(help: "SHA-256 digests of blobs.") var digests: [String]

        func run() async throws {
            for hex in digests {
                let answer = try await target.call("DELETE", "/depot/v1/blobs/\(hex)") as? [String: Any] ?? [:]
                print("evicted \(hex) (\(formatBytes(UInt64(answer["bytes"] as? Int ?? 0))))")
            }
        }
    }

    /// What `pin` and `unpin` share: the ids and whether they name images or blobs.
    struct PinTargets: ParsableArguments {
        @OptionGroup var target: AdminTarget
        @Option(help: "The cloud of --image ids.") var cloud = "default_RegionOne"
        @Flag(help: "The arguments are image ids, not digests.") var image = false
        @Argument var ids: [String]

        func apply(_ method: String, _ done: String) async throws {
            for id in ids {
                _ = try await target.call(method, image ? "/depot/v1/images/\(cloud)/\(id)/pin" : "/depot/v1/blobs/\(id)/pin")
                print("\(done) \(id)")
            }
        }
    }

    struct Pin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keep blobs (by digest) or images (--image) whatever the pressure.")
        @OptionGroup var targets: PinTargets
        func run() async throws { try await targets.apply("PUT", "pinned") }
    }

    struct Unpin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let blobs (or images, --image) be evicted again.")
        @OptionGroup var targets: PinTargets
        func run() async throws { try await targets.apply("DELETE", "unpinned") }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Evict least recently used blobs down to the low watermark.")
        @OptionGroup var target: AdminTarget

        func run() async throws {
            let answer = try await target.call("POST", "/depot/v1/prune") as? [String: Any] ?? [:]
            if target.json { return target.printJSON(answer) }
            print("pruned \(answer["blobs"] ?? 0) blob(s), \(formatBytes(UInt64(answer["bytes"] as? Int ?? 0)))")
        }
    }
}

/// `depot pushes …`: the bytes Depot owes to backends.
struct PushesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pushes", abstract: "List the push queue, retry failed pushes.", subcommands: [List.self, Retry.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Every push with its state, attempts and last error.")
        @OptionGroup var target: AdminTarget
        @Option(name: .customLong("data-dir"), help: "Read a stopped Depot's data directory instead of asking the server.")
        var dataDir: String?

        func run() async throws {
            let pushes: [[String: Any]]
            if let dataDir {
                let lock = try lockDataDirectory(dataDir, .shared)
                defer { withExtendedLifetime(lock) {} }
                pushes = try openCatalog(dataDir).pushes().map(\.json)
            } else {
                pushes = (try await target.call("GET", "/depot/v1/pushes") as? [String: Any])?["pushes"] as? [[String: Any]] ?? []
            }
            if target.json { return target.printJSON(["pushes": pushes]) }
            printTable(
                ["CLOUD", "IMAGE", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"],
                pushes.map {
                    [
                        "\($0["cloud"] ?? "")", "\($0["image_id"] ?? "")", "\($0["state"] ?? "")", "\($0["attempts"] ?? 0)",
                        ($0["state"] as? String) == "pending" ? formatDate($0["next_attempt"] as? Double ?? 0) : "-",
                        String(($0["last_error"] as? String ?? "").prefix(100)),
                    ]
                })
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make failed pushes pending again.")
        @OptionGroup var target: AdminTarget
        @Option(help: "The cloud, OWNER_REGION.") var cloud = "default_RegionOne"
        @Argument(help: "Image ids.") var images: [String]

        func run() async throws {
            for id in images {
                _ = try await target.call("POST", "/depot/v1/pushes/\(cloud)/\(id)/retry")
                print("retrying \(id)")
            }
        }
    }
}

func openCatalog(_ dataDir: String) throws -> Catalog {
    let path = dataDir + "/catalog.sqlite"
    guard FileManager.default.fileExists(atPath: path) else {
        throw CLIError("no catalog at \(path); is --data-dir right? depot fsck --data-dir \(dataDir) rebuilds a lost one")
    }
    return try Catalog(path: path)
}
