import Foundation
import Glance
import HTTPCore

/// A `GET /v2/images` query as Glance reads it (`glance/api/v2/images.py`,
/// `RequestDeserializer.index`; `glance/db/sqlalchemy/api.py`, `image_get_all`): its
/// parameters in order, the sort it asks for with Glance's tie-breakers, and the filters whose
/// answer depends on fields a pending push will change.
struct ImageListQuery {
    /// The parameters, percent-decoded, in the order the client sent them.
    var parameters: [(name: String, value: String)]

    init(query: Substring?) {
        parameters = (query ?? "").split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String {
                (String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding) ?? String(text)
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    func values(_ name: String) -> [String] { parameters.filter { $0.name == name }.map(\.value) }
    func value(_ name: String) -> String? { values(name).first }

    /// The page size the client asked for (a negative one as 0: Glance refuses it with 400
    /// before Depot pages, and a prefix of negative length would trap).
    var limit: Int? { value("limit").flatMap(Int.init).map { max($0, 0) } }
    var marker: String? { value("marker") }

    /// Filters on the fields a push changes (status, size, hashes, `updated_at`): Glance
    /// evaluates them on its pre-upload record, so Depot evaluates them on the record as it
    /// will be.
    static let fieldsAPushChanges: Set<String> = ["status", "size_min", "size_max", "checksum", "os_hash_value", "os_hash_algo", "updated_at", "virtual_size"]
    /// Parameters that shape the page rather than select images.
    static let pagingParameters: Set<String> = ["limit", "marker", "sort", "sort_key", "sort_dir"]

    /// The parameters with some removed and others set, percent-encoded for a URL.
    func encoded(removing removed: Set<String> = [], setting extra: [(String, String)] = []) -> String {
        let kept = parameters.filter { !removed.contains($0.name) }.map { ($0.name, $0.value) } + extra
        return kept.map { Self.percentEncode($0.0) + "=" + Self.percentEncode($0.1) }.joined(separator: "&")
    }

    static func percentEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    // MARK: Sorting

    /// The sort keys with their directions (true for ascending), Glance's tie-breakers
    /// `created_at` and `id` appended as Glance does; nil when the query's sort is invalid
    /// (Glance then answers 400 itself).
    var sort: [(key: String, ascending: Bool)]? {
        var keys: [String] = [], directions: [String] = []
        if let sort = value("sort") {
            guard value("sort_key") == nil, value("sort_dir") == nil else { return nil }
            for item in sort.split(separator: ",") {
                let parts = item.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                // ":" alone splits into nothing: an invalid sort, as Glance says.
                guard let key = parts.first else { return nil }
                keys.append(key)
                directions.append(parts.count > 1 ? parts[1] : "desc")
            }
        } else {
            keys = values("sort_key").map { $0.trimmingCharacters(in: .whitespaces) }
            directions = values("sort_dir").map { $0.trimmingCharacters(in: .whitespaces) }
            if directions.count > 1, directions.count != keys.count { return nil }
        }
        let available: Set<String> = ["name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"]
        guard keys.allSatisfy(available.contains), directions.allSatisfy({ $0 == "asc" || $0 == "desc" }) else { return nil }
        if keys.isEmpty { keys = ["created_at"] }
        if directions.isEmpty { directions = ["desc"] }
        var tieBreaker = "desc"
        if directions.count == 1 {
            tieBreaker = directions[0]
            directions = Array(repeating: directions[0], count: keys.count)
        }
        for key in ["created_at", "id"] where !keys.contains(key) {
            keys.append(key)
            directions.append(tieBreaker)
        }
        return zip(keys, directions).map { ($0, $1 == "asc") }
    }

    /// Whether `a` comes before `b` in the query's order. Values compare as SQL does: null
    /// first, numbers as numbers, text byte by byte.
    ///
    /// - Parameter createdOrder: the order Glance gives images whose `created_at` reads the
    ///   same: Glance keeps microseconds and shows whole seconds.
    /// - Parameter surely: with images tied on `created_at` to the second and no order for
    ///   them, answer false (they may come in either order).
    static func precedes(
        _ a: GlanceImage, _ b: GlanceImage, by sort: [(key: String, ascending: Bool)], createdOrder: [String: Int] = [:], surely: Bool = false
    ) -> Bool {
        for (key, ascending) in sort {
            var order = compare(a[key], b[key])
            if order == 0, key == "created_at" {
                if let x = createdOrder[a.id], let y = createdOrder[b.id] { order = x < y ? -1 : x > y ? 1 : 0 } else if surely { return false }
            }
            if order != 0 { return ascending ? order < 0 : order > 0 }
        }
        return false
    }

    static func compare(_ a: JSONValue?, _ b: JSONValue?) -> Int {
        let a = a == .null ? nil : a, b = b == .null ? nil : b
        switch (a, b) {
        case (nil, nil): return 0
        case (nil, _): return -1
        case (_, nil): return 1
        case let (.number(x)?, .number(y)?): return x < y ? -1 : x > y ? 1 : 0
        case let (.string(x)?, .string(y)?):
            let x = Array(x.utf8), y = Array(y.utf8)
            return x.lexicographicallyPrecedes(y) ? -1 : y.lexicographicallyPrecedes(x) ? 1 : 0
        default: return 0
        }
    }

    // MARK: Filters

    /// Whether a record as it will be passes the query's filters on the fields a push changes
    /// (the other filters Glance itself applied).
    func matchesChangedFields(_ record: GlanceImage) -> Bool {
        for (name, value) in parameters where Self.fieldsAPushChanges.contains(name) {
            switch name {
            case "size_min":
                guard let size = record.size, let minimum = UInt64(value), size >= minimum else { return false }
            case "size_max":
                guard let size = record.size, let maximum = UInt64(value), size <= maximum else { return false }
            case "updated_at":
                guard Self.timeMatches(record["updated_at"]?.stringValue, value) else { return false }
            default:
                let actual = record[name]?.uint64Value.map { "\($0)" } ?? record[name]?.stringValue
                let wanted = value.hasPrefix("in:") ? value.dropFirst(3).split(separator: ",").map(String.init) : [value]
                guard let actual, wanted.contains(actual) else { return false }
            }
        }
        return true
    }

    /// `updated_at=OP:TIME` (gt, gte, lt, lte, eq, neq; eq when no operator).
    static func timeMatches(_ recorded: String?, _ filter: String) -> Bool {
        let parts = filter.split(separator: ":", maxSplits: 1)
        let operators: Set<String> = ["gt", "gte", "lt", "lte", "eq", "neq"]
        let (op, text) = parts.count == 2 && operators.contains(String(parts[0])) ? (String(parts[0]), String(parts[1])) : ("eq", filter)
        let formatter = ISO8601DateFormatter()
        func parse(_ text: String) -> Date? { formatter.date(from: text.hasSuffix("Z") || text.contains("+") ? text : text + "Z") }
        guard let recorded = recorded.flatMap(parse), let wanted = parse(text) else { return false }
        switch op {
        case "gt": return recorded > wanted
        case "gte": return recorded >= wanted
        case "lt": return recorded < wanted
        case "lte": return recorded <= wanted
        case "neq": return recorded != wanted
        default: return recorded == wanted
        }
    }
}
