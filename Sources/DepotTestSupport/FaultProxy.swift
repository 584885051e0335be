import Foundation
import Synchronization

/// A TCP proxy on loopback that sits between a client and a real server and misbehaves on
/// request: latency, a bandwidth cap, a connection cut after N bytes, a stall, and canned 503
/// answers. It also counts the bytes that pass and records request lines, so tests can see what the
/// backend really sent and was asked.
///
/// Faults that end a response (cut, stall) are one-shot and count bytes from the server from the
/// moment they are set, on whatever connection carries them; 503s answer the next requests,
/// including those on kept-alive connections.
public final class FaultProxy: @unchecked Sendable {
    public struct Faults: Sendable {
        /// Delay before each chunk of a request is forwarded.
        public var latency: Duration?
        /// Cap on server-to-client bytes per second.
        public var bytesPerSecond: Int?
        /// Close the connection (RST) after this many more server-to-client bytes.
        public var cutAfterBytes: Int?
        /// Stop forwarding server-to-client bytes after this many more, keeping the socket open.
        public var stallAfterBytes: Int?
        /// Hold the server's answer after this many more server-to-client bytes, as
        /// `holdResponsesTo` holds one (counted in `heldResponses`), until this is nil again:
        /// a hold mid-body at a known byte, whatever the test's own timing.
        public var holdAfterBytes: Int?
        /// Answer this many next requests with 503 without asking the server.
        public var serviceUnavailableCount = 0
        /// When set, only the requests this selects count toward `serviceUnavailableCount`
        /// (e.g. only `PATCH`es); the others pass.
        public var serviceUnavailableTo: (@Sendable (RecordedRequest) -> Bool)?
        /// Keep what the server answered from the clients until this is false again: a gate
        /// that lets a test hand many answers over at one moment (see `heldResponses`).
        public var holdResponses = false
        /// Keep the server's answers to the requests this selects (by the last request head on
        /// the connection) until it is nil or selects them no more: one request's answer late
        /// while others pass, e.g. a record read before a change lands and handed over after.
        public var holdResponsesTo: (@Sendable (RecordedRequest) -> Bool)?

        public init() {}
    }

    public let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let faults = Mutex(Faults())
    private let counters = Mutex((fromServer: 0, toServer: 0, connections: 0, injected503: 0))
    private let sockets = Mutex<Set<Int32>>([])
    private let heads = Mutex<[RecordedRequest]>([])
    private let stopped = Atomic<Bool>(false)

    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:upstreamPort`.
    public init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    deinit { stop() }

    public var url: String { "http://127.0.0.1:\(port)" }

    /// The faults still in effect (one-shot faults clear themselves once they fired).
    public var currentFaults: Faults { faults.withLock { $0 } }

    /// Changes the faults in effect.
    public func setFaults(_ change: (inout Faults) -> Void) {
        faults.withLock { change(&$0) }
    }

    /// Bytes the server sent through the proxy so far.
    public var bytesFromServer: Int { counters.withLock { $0.fromServer } }
    /// Bytes clients sent to the server so far.
    public var bytesToServer: Int { counters.withLock { $0.toServer } }
    public var connectionCount: Int { counters.withLock { $0.connections } }
    /// Client connections open through the proxy now.
    public var openConnections: Int { sockets.withLock { $0.count / 2 } }
    public var injected503Count: Int { counters.withLock { $0.injected503 } }
    /// Connections whose server answer is waiting behind a hold now (`holdResponses`,
    /// `holdResponsesTo`, `holdAfterBytes`).
    public var heldResponses: Int { held.load(ordering: .acquiring) }
    private let held = Atomic<Int>(0)

    /// The request heads clients sent through the proxy so far, in order, those answered with
    /// an injected 503 included.
    public var requests: [RecordedRequest] { heads.withLock { $0 } }

    /// The requests whose method is `method` and whose target's path is `path`.
    public func requests(_ method: String, path: String) -> [RecordedRequest] {
        requests.filter { $0.method == method && $0.path == path }
    }

    public func resetCounters() {
        counters.withLock { $0 = (0, 0, 0, 0) }
        heads.withLock { $0 = [] }
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in sockets.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .acquiring) {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            counters.withLock { $0.connections += 1 }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(upstreamPort).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                close(server)
                close(client)
                continue
            }
            sockets.withLock { $0.formUnion([client, server]) }
            let connection = Connection(client: client, server: server)
            Thread { [self] in pumpRequests(connection) }.start()
            Thread { [self] in pumpResponses(connection) }.start()
        }
    }

    private final class Connection: @unchecked Sendable {
        let client: Int32
        let server: Int32
        /// The last request head the client sent on this connection.
        let lastRequest = Mutex<RecordedRequest?>(nil)
        private let closed = Atomic<Bool>(false)
        /// The pumps still running. The descriptors are closed only when both have returned:
        /// a number closed while the other pump may still read or write it could be handed to
        /// the next accepted connection, and that pump's bytes would land in another stream.
        private let pumps = Atomic<Int>(2)

        init(client: Int32, server: Int32) {
            self.client = client
            self.server = server
        }

        /// Ends both directions, which wakes a pump blocked on either socket; with `reset`, the
        /// client sees a RST (when the descriptors are closed) rather than a clean end.
        func close(reset: Bool = false) {
            guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
            if reset {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            }
            shutdown(client, Int32(SHUT_RDWR))
            shutdown(server, Int32(SHUT_RDWR))
        }

        /// A pump has returned; returns true for the last one, which may close the descriptors.
        func pumpReturned() -> Bool {
            pumps.subtract(1, ordering: .acquiringAndReleasing).newValue == 0
        }
    }

    private func pumpRequests(_ c: Connection) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var scanner = RequestLineScanner()
        defer { pumpEnded(c) }
        while true {
            let n = read(c.client, &buffer, buffer.count)
            if n <= 0 { c.close(); return }
            let found = scanner.scan(buffer[..<n])
            if !found.isEmpty {
                heads.withLock { $0 += found }
                c.lastRequest.withLock { $0 = found.last }
            }
            let (latency, inject503) = faults.withLock { f -> (Duration?, Bool) in
                var inject = f.serviceUnavailableCount > 0
                if inject, let selects = f.serviceUnavailableTo {
                    // Only a chunk that starts a selected request is refused.
                    inject = found.last.map(selects) ?? false
                }
                if inject { f.serviceUnavailableCount -= 1 }
                return (f.latency, inject)
            }
            if inject503 {
                counters.withLock { $0.injected503 += 1 }
                let body = "{\"message\": \"injected by FaultProxy\"}"
                let response = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
                _ = writeAll(c.client, Array(response.utf8)[...])
                c.close()
                return
            }
            if let latency { Thread.sleep(forTimeInterval: Double(latency.components.seconds) + Double(latency.components.attoseconds) / 1e18) }
            counters.withLock { $0.toServer += n }
            if !writeAll(c.server, buffer[..<n]) { c.close(); return }
        }
    }

    private func pumpResponses(_ c: Connection) {
        defer { pumpEnded(c) }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var bucketStart = Date()
        var bucketBytes = 0
        while true {
            let n = read(c.server, &buffer, buffer.count)
            if n <= 0 { c.close(); return }
            if holds(c) { hold { holds(c) } }
            var toSend = n
            var action = 0  // 0 forward, 1 cut after toSend, 2 stall after toSend, 3 hold after toSend
            let rate = faults.withLock { f -> Int? in
                if let cut = f.cutAfterBytes {
                    if cut <= n { toSend = cut; action = 1; f.cutAfterBytes = nil } else { f.cutAfterBytes = cut - n }
                } else if let stall = f.stallAfterBytes {
                    if stall <= n { toSend = stall; action = 2; f.stallAfterBytes = nil } else { f.stallAfterBytes = stall - n }
                } else if let hold = f.holdAfterBytes, hold > 0 {
                    // Left at 0 once reached, so that later chunks are not counted again.
                    if hold <= n { toSend = hold; action = 3; f.holdAfterBytes = 0 } else { f.holdAfterBytes = hold - n }
                }
                return f.bytesPerSecond
            }
            if let rate {
                bucketBytes += toSend
                let due = Double(bucketBytes) / Double(rate)
                let elapsed = Date().timeIntervalSince(bucketStart)
                if due > elapsed { Thread.sleep(forTimeInterval: due - elapsed) }
                if elapsed > 5 { bucketStart = Date(); bucketBytes = 0 }
            }
            counters.withLock { $0.fromServer += toSend }
            if toSend > 0 && !writeAll(c.client, buffer[..<toSend]) { c.close(); return }
            switch action {
            case 1:
                c.close(reset: true)
                return
            case 2:
                // Hold the connection open and silent until the client gives up.
                while !stopped.load(ordering: .acquiring) {
                    var probe = pollfd(fd: c.client, events: Int16(POLLIN), revents: 0)
                    if poll(&probe, 1, 100) > 0 { break }
                }
                c.close()
                return
            case 3:
                hold { faults.withLock { $0.holdAfterBytes != nil } }
                let rest = buffer[toSend..<n]
                counters.withLock { $0.fromServer += rest.count }
                if !rest.isEmpty && !writeAll(c.client, rest) { c.close(); return }
            default:
                continue
            }
        }
    }

    /// Keeps a pump waiting, counted in `heldResponses`, while `holding` says so (or until stop).
    private func hold(while holding: () -> Bool) {
        held.add(1, ordering: .acquiringAndReleasing)
        while holding(), !stopped.load(ordering: .acquiring) { usleep(500) }
        held.subtract(1, ordering: .acquiringAndReleasing)
    }

    /// Whether the server's answer on this connection waits behind a hold now.
    private func holds(_ c: Connection) -> Bool {
        let (all, selector) = faults.withLock { ($0.holdResponses, $0.holdResponsesTo) }
        if all { return true }
        guard let selector, let request = c.lastRequest.withLock({ $0 }) else { return false }
        return selector(request)
    }

    /// Closes the connection's descriptors once both its pumps have returned, after `stop()`
    /// can no longer reach their numbers.
    private func pumpEnded(_ c: Connection) {
        c.close()
        guard c.pumpReturned() else { return }
        sockets.withLock { $0.subtract([c.client, c.server]) }
        close(c.client)
        close(c.server)
    }

    private func writeAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
}


/// A request head seen by a `FaultProxy`.
public struct RecordedRequest: Sendable, CustomStringConvertible {
    public let method: String
    /// The request target's path (without the query).
    public let path: String
    public let target: String
    /// Header fields, names lowercased, in order.
    public let fields: [(name: String, value: String)]

    public func header(_ name: String) -> String? { fields.first { $0.name == name.lowercased() }?.value }

    public var description: String { "\(method) \(target)" + (header("range").map { " (range \($0))" } ?? "") }
}

/// Finds HTTP/1.x request heads in a byte stream cut at arbitrary points (a line may span two
/// reads). A body with a `Content-Length` is skipped by its length, so the next head is found
/// right after it whatever bytes it held; other bodies (chunked) are scanned as lines, and a
/// body line that looked exactly like a request line would be counted, which image bytes
/// practically never do.
struct RequestLineScanner {
    private var partial: [UInt8] = []
    /// The request line and fields of a head still being read.
    private var head: (line: [Substring], fields: [(name: String, value: String)])?
    /// Bytes of the last head's body not seen yet.
    private var bodyRemaining = 0

    mutating func scan(_ chunk: ArraySlice<UInt8>) -> [RecordedRequest] {
        var found: [RecordedRequest] = []
        chunk.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var start = 0
            while start < raw.count {
                if bodyRemaining > 0 {
                    let skipped = min(bodyRemaining, raw.count - start)
                    bodyRemaining -= skipped
                    start += skipped
                    continue
                }
                guard let hit = memchr(base + start, 0x0A, raw.count - start) else { break }
                let end = base.distance(to: UnsafeRawPointer(hit))
                partial += UnsafeRawBufferPointer(rebasing: raw[start..<end])
                if let request = line(partial) {
                    found.append(request)
                    if request.header("transfer-encoding") == nil, let length = request.header("content-length").flatMap(Int.init), length > 0 {
                        bodyRemaining = length
                    }
                }
                partial.removeAll(keepingCapacity: true)
                start = end + 1
            }
            guard start < raw.count else { return }
            // Longer than any head line a test sends: a body, not worth keeping.
            if raw.count - start + partial.count <= 16 << 10 {
                partial += UnsafeRawBufferPointer(rebasing: raw[start...])
            } else {
                partial.removeAll(keepingCapacity: true)
            }
        }
        return found
    }

    /// Takes one line (without its LF); returns a request whose head it ends.
    private mutating func line(_ bytes: [UInt8]) -> RecordedRequest? {
        guard bytes.last == 0x0D else { head = nil; return nil }
        let text = String(decoding: bytes.dropLast(), as: UTF8.self)
        if let current = head {
            if text.isEmpty {
                head = nil
                let target = String(current.line[1])
                return RecordedRequest(
                    method: String(current.line[0]), path: String(target.prefix { $0 != "?" }), target: target, fields: current.fields)
            }
            guard let colon = text.firstIndex(of: ":") else { head = nil; return nil }
            head?.fields.append((text[..<colon].lowercased(), text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            return nil
        }
        let fields = text.split(separator: " ", omittingEmptySubsequences: false)
        if fields.count == 3, !fields[0].isEmpty, fields[0].allSatisfy({ ("A"..."Z").contains($0) }), fields[1].hasPrefix("/"),
           fields[2] == "HTTP/1.1" || fields[2] == "HTTP/1.0" {
            head = (fields, [])
        }
        return nil
    }
}
