import DepotTestSupport
import Foundation
import Synchronization
import Testing

/// The fault proxy's own promise: whatever a connection's faults, its bytes go to that
/// connection's peer and to no other. A pump that outlives its connection (asleep behind a
/// bandwidth cap or a latency when the other side closes) must not write into the connection
/// that the kernel gave the same descriptor numbers to next.
@Suite(.serialized) struct FaultProxyTests {
    /// A server answering each connection, numbered from 1 in the order accepted, on a thread
    /// of its own.
    final class Upstream: @unchecked Sendable {
        let port: Int
        private let listener: Int32

        init(_ serve: @escaping @Sendable (_ index: Int, _ fd: Int32) -> Void) throws {
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.listener = listener
            var address = loopback(port: 0)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0, listen(listener, 16) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
            }
            port = Int(UInt16(bigEndian: address.sin_port))
            Thread {
                var index = 0
                while true {
                    let fd = accept(listener, nil, nil)
                    guard fd >= 0 else { return }
                    index += 1
                    let current = index
                    Thread { serve(current, fd) }.start()
                }
            }.start()
        }

        func stop() {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
    }

    /// Where a late pump's bytes land depends on which socket the kernel hands its old
    /// number to: the next client's (it receives them), the next server socket (upstream
    /// receives them), or upstream's own end of the next connection (they come back through the
    /// proxy to the next client). Each test looks at all three.
    @Test func aResponseHeldBehindTheBandwidthCapNeverReachesTheNextConnection() throws {
        // Each upstream connection sends its own number as every byte until the proxy goes,
        // and keeps whatever it is sent, which should be nothing: the clients send nothing.
        let received = Mutex<[UInt8]>([])
        let upstream = try Upstream { index, fd in
            Thread {
                var buffer = [UInt8](repeating: 0, count: 16 << 10)
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    guard n > 0 else { return }
                    received.withLock { $0 += buffer[..<n] }
                }
            }.start()
            let block = [UInt8](repeating: UInt8(index), count: 16 << 10)
            while block.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) > 0 {}
            shutdown(fd, Int32(SHUT_RDWR))
        }
        defer { upstream.stop() }
        let proxy = try FaultProxy(upstreamPort: upstream.port)
        defer { proxy.stop() }
        // 64 KiB reads at 256 KiB/s: the response pump sleeps about a quarter second per read.
        proxy.setFaults { $0.bytesPerSecond = 256 << 10 }

        for _ in 0..<3 {
            let first = try connectTo(proxy.port)
            let next = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let firstBytes = receive(first, for: .seconds(2), atLeast: 1)
            close(first)
            // Until the proxy has seen the close (its request pump ends the connection), but
            // not as long as the response pump sleeps: the next connection is accepted while
            // that pump still holds its next read.
            waitUntil(within: .milliseconds(150)) { proxy.openConnections == 0 }
            let second = try connectTo(proxy.port, on: next)
            let secondBytes = receive(second, for: .milliseconds(1200))
            close(second)
            let firstTag = try #require(firstBytes.first)
            #expect(!secondBytes.isEmpty)
            #expect(Set(secondBytes).count == 1 && !secondBytes.contains(firstTag),
                    "the second connection got bytes of \(Set(secondBytes).sorted()), the first connection's were \(firstTag)")
            waitUntil(within: .seconds(2)) { proxy.openConnections == 0 }
        }
        #expect(received.withLock { $0.isEmpty }, "upstream was sent \(received.withLock { $0.count }) bytes")
    }

    @Test func aRequestHeldBehindTheLatencyNeverReachesTheNextConnection() throws {
        // The first upstream connection is closed after 100 ms, before the proxy has forwarded
        // anything; every other one keeps what it reads and sends nothing.
        let received = Mutex<[Int: [UInt8]]>([:])
        let upstream = try Upstream { index, fd in
            defer { close(fd) }
            if index == 1 {
                Thread.sleep(forTimeInterval: 0.1)
                return
            }
            var buffer = [UInt8](repeating: 0, count: 16 << 10)
            while true {
                let n = read(fd, &buffer, buffer.count)
                guard n > 0 else { return }
                received.withLock { $0[index, default: []] += buffer[..<n] }
            }
        }
        defer { upstream.stop() }
        let proxy = try FaultProxy(upstreamPort: upstream.port)
        defer { proxy.stop() }
        // The request pump sleeps 400 ms before it forwards what it read.
        proxy.setFaults { $0.latency = .milliseconds(400) }

        let first = try connectTo(proxy.port)
        let next = (0..<4).map { _ in socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0) }
        sendAll(first, [UInt8](repeating: 0x41, count: 32 << 10))
        // Upstream has closed the first connection, so the proxy has ended it; its request
        // pump still sleeps with the bytes above. Four connections now take the numbers freed
        // (the proxy's accepted socket was numbered when it began to wait, so they go to the
        // sockets made after it, on both sides of the proxy).
        Thread.sleep(forTimeInterval: 0.2)
        let seconds = try next.map { try connectTo(proxy.port, on: $0) }
        for second in seconds { sendAll(second, [UInt8](repeating: 0x42, count: 32 << 10)) }
        let answered = seconds.map { receive($0, for: .milliseconds(800 / seconds.count)) }
        // What the proxy forwards arrives 400 ms after it was read, and a 32 KiB write may take
        // two reads.
        waitUntil(within: .seconds(3)) { received.withLock { $0.values.reduce(0) { $0 + $1.count } >= 4 * (32 << 10) } }
        for second in seconds { close(second) }
        close(first)
        let got = received.withLock { $0 }
        #expect(answered.allSatisfy { $0.isEmpty }, "the next clients were answered \(answered.map(\.count)) bytes")
        #expect(got.keys.sorted() == [2, 3, 4, 5])
        let described = got.mapValues { "\($0.count) bytes of \(Set($0).sorted())" }
        #expect(got.values.allSatisfy { $0.count == 32 << 10 && Set($0) == [0x42] }, "the next connections' server got \(described)")
    }
}

private func waitUntil(within window: Duration, _ condition: () -> Bool) {
    let deadline = ContinuousClock.now + window
    while !condition(), ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.002) }
}

private func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return address
}

/// Connects `fd` (a new socket when nil) to the loopback `port`. A test makes its next socket
/// before it closes one, so that the numbers the proxy frees go to the proxy's next sockets and
/// not to the test's.
private func connectTo(_ port: Int, on socketFD: Int32? = nil) throws -> Int32 {
    let fd = socketFD ?? socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = loopback(port: port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
    }
    return fd
}

private func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { return }
        offset += n
    }
}

/// What `fd` receives within `window`, or until `atLeast` bytes have come.
private func receive(_ fd: Int32, for window: Duration, atLeast: Int = .max) -> [UInt8] {
    let deadline = ContinuousClock.now + window
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while bytes.count < atLeast {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { break }
        var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
        guard poll(&probe, 1, max(1, milliseconds)) > 0 else { continue }
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { break }
        bytes += buffer[..<n]
    }
    return bytes
}
