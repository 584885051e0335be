import BlobStore
import Cache
import HTTPCore
import NIOHTTP1

// How the cache's errors answer HTTP clients: in one place, so every route says the same
// thing about the same failure. Routes that mirror a Glance answer of their own (a download of
// a deactivated image, the cache API's "Image X not found.") handle those cases first.

extension CacheError: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus {
        switch self {
        case let .backendRefused(status, _): HTTPResponseStatus(statusCode: status)
        case .imageNotActive: .badRequest
        case .unknownCloud: .notFound
        case .backendUnavailable, .tooManyFills, .tooManyUploads: .serviceUnavailable
        case .fillFailed: .badGateway
        case .budgetExhausted, .diskFloor, .diskFull: .insufficientStorage
        }
    }

    public var responseMessage: String {
        if case let .backendRefused(_, message) = self { return message }
        return description
    }

    public var responseHeaders: HTTPHeaders {
        switch self {
        case .tooManyFills, .tooManyUploads: ["retry-after": "5"]
        default: [:]
        }
    }
}

extension UploadError: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus {
        switch self {
        case let .refused(status, _): HTTPResponseStatus(statusCode: status)
        case .tooLarge: .payloadTooLarge
        }
    }
}

extension EvictionRefusal: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus {
        if case .notCached = self { return .notFound }
        return .conflict
    }
}

extension DigestParseError: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus { .badRequest }
}

extension TokenProjects.Refusal: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus { HTTPResponseStatus(statusCode: status) }
}

extension BlobStoreError: HTTPResponseError {
    public var responseStatus: HTTPResponseStatus {
        switch self {
        case .diskFull: .insufficientStorage
        case .digestMismatch: .unprocessableEntity
        case .sizeMismatch: .badRequest
        default: .internalServerError
        }
    }

    /// Only uploads send these to a client: the messages say what became of its bytes.
    public var responseMessage: String {
        switch self {
        case .diskFull: "Depot's disk is full; nothing was kept. Free space in its data directory or retry later"
        case let .digestMismatch(expected, actual):
            "the body's \(expected.algorithm.rawValue) is \(actual.hex) but the request declared \(expected.hex); nothing was kept. Check the file and the digest header"
        case let .sizeMismatch(expected, actual): "Content-Length said \(expected) bytes but the body had \(actual); nothing was kept"
        default: "Depot could not store the upload: \(self)"
        }
    }
}
