import CCurl

/// One libcurl easy handle, used by the transfer loop's thread only. The loop keeps idle ones
/// for reuse (`curl_easy_reset` clears their options); connections live in the multi handle's
/// cache, so a request to the same host reuses a kept-alive connection whichever handle it gets.
final class EasyHandle {
    let raw: UnsafeMutableRawPointer

    init() {
        CurlGlobal.ensureInitialized()
        guard let handle = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        raw = handle
    }

    deinit { curl_easy_cleanup(raw) }
}

enum CurlGlobal {
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
    }()

    static func ensureInitialized() {
        precondition(initialized, "curl_global_init failed")
    }
}
