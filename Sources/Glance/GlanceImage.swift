import Foundation

/// A Glance v2 image record. Typed accessors for the fields Depot uses; every property Glance
/// sent, known or not, is kept in `properties`.
public struct GlanceImage: Sendable, Hashable, Codable {
    public var properties: [String: JSONValue]

    public init(properties: [String: JSONValue]) { self.properties = properties }

    public init(from decoder: any Decoder) throws {
        properties = try decoder.singleValueContainer().decode([String: JSONValue].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(properties)
    }

    public subscript(key: String) -> JSONValue? { properties[key] }

    public var id: String { properties["id"]?.stringValue ?? "" }
    public var name: String? { properties["name"]?.stringValue }
    /// queued, saving, uploading, importing, active, deactivated, killed, deleted, pending_delete.
    public var status: String? { properties["status"]?.stringValue }
    public var isActive: Bool { status == "active" }
    public var size: UInt64? { properties["size"]?.uint64Value }
    /// MD5 of the image data, hex.
    public var checksum: String? { properties["checksum"]?.stringValue }
    /// The multihash algorithm, usually `sha512`.
    public var osHashAlgo: String? { properties["os_hash_algo"]?.stringValue }
    public var osHashValue: String? { properties["os_hash_value"]?.stringValue }
    public var owner: String? { properties["owner"]?.stringValue }
    /// public, private, shared, community.
    public var visibility: String? { properties["visibility"]?.stringValue }
    public var diskFormat: String? { properties["disk_format"]?.stringValue }
    public var containerFormat: String? { properties["container_format"]?.stringValue }
    /// When Glance last changed the record (`updated_at`, UTC).
    public var updatedAt: Date? {
        guard let text = properties["updated_at"]?.stringValue else { return nil }
        return ISO8601DateFormatter().date(from: text.hasSuffix("Z") ? text : text + "Z")
    }
    public var tags: [String] { properties["tags"]?.arrayValue?.compactMap(\.stringValue) ?? [] }
}

/// One JSON-patch operation for `PATCH /v2/images/{id}`.
public struct ImagePatch: Sendable, Hashable, Encodable {
    public enum Operation: String, Sendable, Encodable { case add, replace, remove }

    public var op: Operation
    public var path: String
    public var value: JSONValue?

    public static func add(_ property: String, _ value: JSONValue) -> ImagePatch {
        ImagePatch(op: .add, path: "/" + property, value: value)
    }

    public static func replace(_ property: String, _ value: JSONValue) -> ImagePatch {
        ImagePatch(op: .replace, path: "/" + property, value: value)
    }

    public static func remove(_ property: String) -> ImagePatch {
        ImagePatch(op: .remove, path: "/" + property, value: nil)
    }

    enum CodingKeys: String, CodingKey { case op, path, value }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op)
        try c.encode(path, forKey: .path)
        if let value { try c.encode(value, forKey: .value) }
    }
}
