import BlobStore
import DepotTestSupport
import Foundation
import Glance

/// A client for `endpoint` with `token` as its service credential; short backoff for tests.
func makeClient(_ endpoint: String, token: String = GlanceServer.alice, _ configure: (inout GlanceClientConfiguration) -> Void = { _ in }) -> GlanceClient {
    var configuration = GlanceClientConfiguration(endpoint: endpoint, credentials: .token(token))
    configuration.retryBaseDelay = .milliseconds(20)
    configuration.retryMaxDelay = .milliseconds(200)
    configure(&configuration)
    return GlanceClient(configuration: configuration)
}

/// Creates a raw/bare image record (any bytes are valid raw data for Glance's format check).
func createRawImage(_ client: GlanceClient, name: String = "depot-test-\(UUID().uuidString)", visibility: String = "private", extra: [String: JSONValue] = [:]) async throws -> GlanceImage {
    var properties: [String: JSONValue] = [
        "name": .string(name), "disk_format": .string("raw"), "container_format": .string("bare"), "visibility": .string(visibility),
    ]
    properties.merge(extra) { _, new in new }
    return try await client.createImage(properties)
}

/// Creates an image and uploads `bytes` to it; returns the active image record.
func createActiveImage(_ client: GlanceClient, bytes: [UInt8], visibility: String = "private") async throws -> GlanceImage {
    let image = try await createRawImage(client, visibility: visibility)
    try await client.uploadImageData(image.id, from: .bytes(bytes))
    return try await client.showImage(image.id)
}

/// Reads a whole download, hashing as it goes; returns the bytes only when asked.
func drain(_ download: ImageDownload, keep: Bool = false) async throws -> (count: UInt64, sha512: Digest, bytes: [UInt8]) {
    let hasher = DigestHasher(.sha512)
    var count: UInt64 = 0
    var kept: [UInt8] = []
    for try await chunk in download {
        chunk.withUnsafeBytes { hasher.update($0) }
        count += UInt64(chunk.count)
        if keep { kept += chunk }
    }
    return (count, hasher.finish(), kept)
}
