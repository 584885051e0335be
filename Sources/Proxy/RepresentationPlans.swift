import Glance
import HTTPCore
import HTTPSemantics
import NIOHTTP1

extension Representation {
    /// An image's data as every serving path describes it, from Glance's record alone (so a
    /// miss knows it before the first byte): the size, Glance's `os_hash_value` (else its MD5
    /// `checksum`) as the strong entity tag, and the `checksum` as `Content-MD5`.
    ///
    /// The tag is Glance's hash of the bytes, which an image keeps for life (images are
    /// immutable once active), so a validator a client holds stays true on every path.
    init(image: GlanceImage) {
        let tag = [image.osHashValue, image.checksum].lazy.compactMap { $0 }.first { value in
            !value.isEmpty && value.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }
        }
        self.init(size: image.size ?? 0, entityTag: tag.map { "\"\($0.lowercased())\"" }, contentMD5: image.checksum)
    }
}

extension RepresentationRequest {
    /// The request's method and its range and conditional fields; nil for methods other than
    /// GET and HEAD.
    init?(_ head: HTTPRequestHead) {
        let method: Method
        switch head.method {
        case .GET: method = .get
        case .HEAD: method = .head
        default: return nil
        }
        self.init(
            method: method, range: head.headers.first(name: "range"), ifRange: head.headers.first(name: "if-range"),
            ifNoneMatch: head.headers["if-none-match"].isEmpty ? nil : head.headers["if-none-match"].joined(separator: ", "))
    }
}

extension ResponsePlan {
    /// The plan's header fields, then where the bytes come from (`x-depot-cache`).
    func httpHeaders(cacheResult: String) -> HTTPHeaders {
        var headers = HTTPHeaders(headers.map { ($0.name, $0.value) })
        headers.add(name: "x-depot-cache", value: cacheResult)
        return headers
    }
}
