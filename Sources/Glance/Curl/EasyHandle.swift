import CCurl
import Synchronization

/// One libcurl easy handle. Owned by one transfer at a time; returned to its pool afterwards so
/// its live connections are reused.
final class EasyHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer

    init() {
        CurlGlobal.ensureInitialized()
        guard let handle = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        raw = handle
    }

    deinit { curl_easy_cleanup(raw) }
}

/// Idle easy handles kept for reuse. `curl_easy_reset` clears options but keeps the handle's
/// connection cache, so a request to the same host reuses a kept-alive connection.
final class EasyHandlePool: Sendable {
    private let idle = Mutex<[EasyHandle]>([])
    private let capacity: Int

    init(capacity: Int = 64) { self.capacity = capacity }

    func take() -> EasyHandle {
        idle.withLock { $0.popLast() } ?? EasyHandle()
    }

    func give(_ handle: EasyHandle) {
        curl_easy_reset(handle.raw)
        idle.withLock { handles in
            if handles.count < capacity { handles.append(handle) }
        }
    }
}

enum CurlGlobal {
    private static let initialized: Bool = {
        curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
    }()

    static func ensureInitialized() {
        precondition(initialized, "curl_global_init failed")
    }
}
