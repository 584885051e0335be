import BlobStore
import Cache
import DepotTestSupport
import Foundation
import Glance
import NIOCore
import HTTPCore
import Proxy
import Testing

/// The limits that keep Depot up when clients are many, slow or hostile: connections, header
/// and idle timeouts, fills in flight, and memory that does not grow with a slow reader.
@Suite(.serialized) struct ServerLimitsTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// The one end-to-end check of the header timeout, over a real socket; the timer's rules
    /// are in `ConnectionHandlerTests` and `ConnectionStateMachineTests`.
    @Test func aSlowlorisClientIsClosedAtTheHeaderTimeoutEvenWhileItTrickles() async throws {
        var limits = ServerLimits()
        limits.headerTimeout = .seconds(1)
        try await withDepot(glanceURL: glance.url, limits: limits) { depot in
            let port = depot.port
            let (closedAfter, answered) = try await offThePool { () throws -> (Duration, [UInt8]) in
                let fd = try connectLoopback(port: port)
                defer { close(fd) }
                let started = ContinuousClock.now
                sendAll(fd, Array("GET /healthz HTTP/1.1\r\nHost: depot\r\n".utf8))
                // One header byte every 100 ms resets any plain idle timer; the head never ends.
                var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var buffer = [UInt8](repeating: 0, count: 4096)
                var received: [UInt8] = []
                // Long enough for a loaded machine's late close, not for a head that never times out.
                while ContinuousClock.now - started < .seconds(20) {
                    let sent = send(fd, "X-Slow: a\r\n", 11, Int32(MSG_NOSIGNAL))
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n > 0 { received += buffer[..<n] }
                    if sent < 0 || n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return (ContinuousClock.now - started, received) }
                }
                return (ContinuousClock.now - started, received)
            }
            // A timer that each header byte resets never closes it: 20 s here.
            #expect(closedAfter < .seconds(10), "the trickling connection stayed open \(closedAfter), for a header timeout of 1 s")
            #expect(answered.isEmpty, "no response to a request whose head never ended")
            // Idle and busy keep-alive connections: ConnectionHandlerTests, on a clock of their own.
        }
    }

    @Test func aDownloadLongerThanTheHeaderTimeoutIsNotCutOff() async throws {
        var limits = ServerLimits()
        limits.headerTimeout = .seconds(1)
        try await withDepot(glanceURL: glance.url, limits: limits) { depot in
            let bytes = pseudoRandomBytes(count: 24 << 20, seed: 71)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let warm = try await curl("\(depot.url)/v2/images/\(image.id)/file")
            #expect(warm.status == 200 && warm.body == bytes)
            // curl at 8 MiB/s takes 3 s for the hit, three times the header timeout.
            let slow = try await curl("\(depot.url)/v2/images/\(image.id)/file", token: GlanceServer.alice, ["--limit-rate", "8M"])
            #expect(slow.status == 200)
            #expect(slow.header("x-depot-cache") == "hit")
            #expect(slow.body == bytes, "the whole image arrived over a connection slower than the header timeout")
        }
    }

    /// The idle timeout closes a connection on which nothing moves, not one whose response is
    /// still going out: bytes the client acknowledges are progress, however long one write is.
    @Test func aHitLongerThanTheIdleTimeoutIsNotCutOff() async throws {
        var limits = ServerLimits()
        // curl's --limit-rate reads in bursts and then sleeps; with loopback's socket buffers
        // (several MiB) a pause of about a second is the client's own, so the timeout is 2 s.
        limits.idleTimeout = .seconds(2)
        try await withDepot(glanceURL: glance.url, limits: limits) { depot in
            let bytes = pseudoRandomBytes(count: 40 << 20, seed: 72)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let url = "\(depot.url)/v2/images/\(image.id)/file"
            let warm = try await curl(url)
            #expect(warm.status == 200 && warm.body == bytes)
            // curl at 8 MiB/s takes 5 s for the whole image and 3 s for the range: longer than
            // the idle timeout, with bytes flowing all the time. The decision is cached by
            // now, so these are answered on the event loop's fast path.
            let whole = try await curl(url, token: GlanceServer.alice, ["--limit-rate", "8M"])
            #expect(whole.status == 200 && whole.header("x-depot-cache") == "hit")
            #expect(whole.body == bytes, "the whole image arrived: \(whole.body.count) of \(bytes.count) bytes")
            let range = try await curl(url, token: GlanceServer.alice, ["--limit-rate", "8M", "-r", "1000-25166823"])
            #expect(range.status == 206)
            #expect(range.body == Array(bytes[1000...25_166_823]), "the whole range arrived: \(range.body.count) bytes")
        }
    }

    /// A client waiting on Depot is not idle: a miss whose backend holds its answer for longer
    /// than the idle timeout, before the first byte and again mid-body, still delivers the
    /// whole image on the client's connection (it was once closed with no answer at all,
    /// curl's "empty reply"). The backend's own stall limit is what ends such a wait.
    @Test func aMissWaitingOnASlowBackendIsNotCutOffAtTheIdleTimeout() async throws {
        var limits = ServerLimits()
        limits.idleTimeout = .seconds(1)
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        try await withDepot(glanceURL: proxy.url, limits: limits) { depot in
            let bytes = pseudoRandomBytes(count: 8 << 20, seed: 75)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let path = "/v2/images/\(image.id)/file"
            let holdData: @Sendable (RecordedRequest) -> Bool = { $0.method == "GET" && $0.path == path }
            proxy.setFaults { $0.holdResponsesTo = holdData }
            let download = Task { try await curl("\(depot.url)\(path)", token: GlanceServer.alice) }
            // Held before its first byte for 3 idle timeouts...
            try await Task.sleep(for: .seconds(3))
            #expect(proxy.heldResponses == 1, "the backend's answer was held")
            // ...and again once 2 MiB of the body have gone to the client: held by the proxy at
            // that byte, not when this task next wakes (under a loaded machine it once woke after
            // the whole image had passed).
            proxy.setFaults { $0.holdResponsesTo = nil; $0.holdAfterBytes = 2 << 20 }
            try await waitUntil("the answer is held mid-body", timeout: .seconds(20)) { proxy.heldResponses == 1 }
            try await Task.sleep(for: .seconds(3))
            #expect(proxy.heldResponses == 1, "held mid-body")
            #expect(proxy.bytesFromServer < bytes.count, "the hold came before the body's end")
            proxy.setFaults { $0.holdAfterBytes = nil }
            let answer = try await download.value
            #expect(answer.status == 200 && answer.header("x-depot-cache") == "miss")
            #expect(answer.body == bytes, "the whole image arrived: \(answer.body.count) of \(bytes.count) bytes")

            // A reader of a miss that stops reading is still the client's idling: closed. The
            // backend is held to 2 MiB/s, so the answer's end is not written for 8 s: until
            // then only the queued bytes tell the client's idling from a wait on Depot. A watch
            // that took the stall for Depot's wait would close at 9 s or later; the bound of 6 s
            // leaves room for a loaded machine (at 4 MiB/s and a bound of 3 s, one clean-clone
            // run read 5.7 s while other tests' requests there took 4-5 s).
            proxy.setFaults { $0.bytesPerSecond = 2 << 20 }
            let other = try await uploadImage(glanceAsAlice(glance.url), pseudoRandomBytes(count: 16 << 20, seed: 76))
            let port = depot.port
            let request = "GET /v2/images/\(other.id)/file HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n"
            let (stalledFD, stallStart) = try await offThePool { try Self.stallAfterFirstBytes(port: port, request, "the miss's answer started") }
            defer { close(stalledFD) }
            let stalledFor = try await closeOfLastConnection(depot, after: stallStart.stalled)
            #expect(stalledFor.map { $0 < .seconds(6) } == true, "closed after \(String(describing: stalledFor)), for a timeout of 1 s")
        }
    }

    /// An idle keep-alive connection and a client that stops reading mid-download are both
    /// closed once nothing has moved for the idle timeout; the header timeout is set far off,
    /// so the close is the idle watch's.
    @Test func idleAndStalledConnectionsAreClosedAtTheIdleTimeout() async throws {
        var limits = ServerLimits()
        limits.idleTimeout = .seconds(2)
        limits.headerTimeout = .seconds(60)
        try await withDepot(glanceURL: glance.url, limits: limits) { depot in
            let bytes = pseudoRandomBytes(count: 40 << 20, seed: 74)
            let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
            let warm = try await curl("\(depot.url)/v2/images/\(image.id)/file")
            #expect(warm.status == 200 && warm.body == bytes)
            let port = depot.port
            let request = "GET /v2/images/\(image.id)/file HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n"
            let (idle, stalledFD, stallStart) = try await offThePool { () throws -> ((Duration, Bool), Int32, StallStart) in
                // Idle: one answered request, then nothing either way. Timed from before the
                // request: Depot's idle clock cannot start earlier, while the answer's arrival
                // here can come later than Depot's (a loaded machine wakes this thread late).
                let requested = ContinuousClock.now
                let idleFD = try connectLoopback(port: port)
                defer { close(idleFD) }
                sendAll(idleFD, Array("GET /healthz HTTP/1.1\r\nHost: depot\r\n\r\n".utf8))
                let answer = readOneResponse(idleFD, deadline: .now + .seconds(30))
                #expect(String(decoding: answer.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 200"))
                let idleEnd = readUntilClosed(idleFD, deadline: .now + .seconds(30))
                let idle = (ContinuousClock.now - requested, idleEnd.closed)
                // Stalled: a 40 MiB hit asked for, its first bytes read, then no more reading.
                let (stalledFD, stallStart) = try Self.stallAfterFirstBytes(port: port, request, "the hit started")
                return (idle, stalledFD, stallStart)
            }
            defer { close(stalledFD) }
            #expect(idle.1, "the idle connection was closed")
            #expect(idle.0 >= .seconds(2) && idle.0 < .seconds(12), "closed \(idle.0) after the request, for a timeout of 2 s")
            // Lower bound from the request (Depot's clock can start no earlier), upper from the
            // stall; a watch that never closes a stalled reader leaves it open past 20 s.
            let stalledFor = try await closeOfLastConnection(depot, after: stallStart.stalled)
            let sinceRequest = stalledFor.map { $0 + (stallStart.stalled - stallStart.requested) }
            #expect(sinceRequest.map { $0 >= .seconds(2) } == true, "closed \(String(describing: sinceRequest)) after the request, for a timeout of 2 s")
            #expect(stalledFor.map { $0 < .seconds(10) } == true, "closed after \(String(describing: stalledFor)), for a timeout of 2 s")
        }
    }

    @Test func connectionsOverTheLimitGet503AndTheServerRecovers() async throws {
        var limits = ServerLimits()
        limits.maximumConnections = 3
        try await withDepot(glanceURL: glance.url, limits: limits) { depot in
            let port = depot.port
            let (held, refused) = try await offThePool { () throws -> ([Int32], String) in
                var held: [Int32] = []
                for _ in 0..<3 {
                    let fd = try connectLoopback(port: port)
                    sendAll(fd, Array("GET /healthz HTTP/1.1\r\nHost: depot\r\n\r\n".utf8))
                    // Kept alive: the whole answer, however long a busy machine takes to send it.
                    let answer = readOneResponse(fd, deadline: .now + .seconds(10))
                    #expect(String(decoding: answer.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 200"))
                    held.append(fd)
                }
                let extra = try connectLoopback(port: port)
                defer { close(extra) }
                // Returns at the close; the deadline only bounds a refusal that never closes.
                let answer = readUntilClosed(extra, deadline: .now + .seconds(30))
                #expect(answer.closed, "the connection over the limit is closed")
                return (held, String(decoding: answer.bytes, as: UTF8.self))
            }
            #expect(refused.hasPrefix("HTTP/1.1 503"))
            #expect(refused.lowercased().contains("retry-after: 5"))
            #expect(refused.contains("limits.max_connections"), "the message names the setting: \(refused)")
            // The refused connection is counted out once its close is processed.
            try await waitForOpenConnections(depot, 3)

            close(held[0])
            // Its slot is free once the close is processed: waited for, not guessed at.
            try await waitForOpenConnections(depot, 2)
            let after = try await curl("\(depot.url)/healthz", token: nil)
            #expect(after.status == 200, "a connection slot freed is usable again")
            held.dropFirst().forEach { close($0) }
            try await waitForOpenConnections(depot, 0)
        }
    }

    @Test func fillsOverTheLimitGet503WithRetryAfterAndTheRunningFillEndsWell() async throws {
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        var settings = CacheSettings.testing
        settings.maximumFills = 1
        try await withDepot(glanceURL: proxy.url, settings: settings) { depot in
            let first = pseudoRandomBytes(count: 6 << 20, seed: 72), second = pseudoRandomBytes(count: 1 << 20, seed: 73)
            let client = glanceAsAlice(glance.url)
            let imageA = try await uploadImage(client, first)
            let imageB = try await uploadImage(client, second)
            // The backend's answer to A's fill is held until B has been refused: A's fill runs
            // for as long as the test needs, however slow the machine (the one-byte ranged GET
            // of the download check passes).
            let idA = imageA.id
            proxy.setFaults { $0.holdResponsesTo = { isImageFetch($0, idA) } }
            async let slow = curl("\(depot.url)/v2/images/\(idA)/file")
            try await waitUntil("A's fill runs, its answer held") {
                proxy.heldResponses == 1 && depot.cache.runningFill(cloud: "default_RegionOne", imageID: imageA.id) != nil
            }
            let refused = try await curl("\(depot.url)/v2/images/\(imageB.id)/file")
            #expect(refused.status == 503)
            #expect(refused.header("retry-after") == "5")
            #expect(String(decoding: refused.body, as: UTF8.self).contains("limits.max_fills"))
            proxy.setFaults { $0.holdResponsesTo = nil }
            let a = try await slow
            #expect(a.status == 200 && a.body == first, "the fill under way was not disturbed")
            let b = try await curl("\(depot.url)/v2/images/\(imageB.id)/file")
            #expect(b.status == 200 && b.body == second, "once the fill ended another may start")
        }
    }

    @Test func uploadsOverTheLimitGet503BeforeTheirBodyIsAskedFor() async throws {
        var settings = CacheSettings.testing
        settings.maximumUploads = 1
        try await withDepot(glanceURL: glance.url, settings: settings) { depot in
            let first = try await createImage(depot.url), second = try await createImage(depot.url)
            let bytes = pseudoRandomBytes(count: 4 << 20, seed: 75)
            let file = TemporaryDirectory("depot-upload-limit")
            try Data(bytes).write(to: URL(fileURLWithPath: file.path + "/image.raw"))
            let port = depot.port
            // The first upload sends half its body and holds the connection.
            let holder = try await offThePool { () throws -> Int32 in
                let fd = try connectLoopback(port: port)
                sendAll(fd, Array("PUT /v2/images/\(first.id)/file HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\nContent-Type: application/octet-stream\r\nContent-Length: \(bytes.count)\r\n\r\n".utf8))
                sendAll(fd, Array(bytes[..<(2 << 20)]))
                return fd
            }
            // The slot is taken after Glance's permission check, which a loaded machine slows.
            try await waitUntil("the first upload holds the slot", timeout: .seconds(30)) { depot.cache.uploads.slots.inUse != 0 }
            #expect(depot.cache.uploads.slots.inUse == 1)
            let secondURL = "\(depot.url)/v2/images/\(second.id)/file"
            let refused = try await curl(secondURL, ["-X", "PUT", "-T", file.path + "/image.raw", "-H", "Expect: 100-continue"])
            #expect(refused.status == 503)
            #expect(refused.header("retry-after") == "5")
            #expect(errorMessage(refused).contains("limits.max_uploads"))

            let firstStatus = try await offThePool { () -> String in
                defer { close(holder) }
                sendAll(holder, Array(bytes[(2 << 20)...]))
                // One answer on a kept-alive connection: returns when it is whole.
                let answer = readOneResponse(holder, deadline: .now + .seconds(60))
                return String(decoding: answer.bytes.prefix(12), as: UTF8.self)
            }
            #expect(firstStatus == "HTTP/1.1 204", "the upload holding the slot ends well")
            #expect(try await depot.settledPush(first.id).state == .done)
            try await expectGlanceHolds(glance.url, first.id, bytesOf: file.path + "/image.raw")
            #expect(depot.cache.uploads.slots.inUse == 0)
            #expect(try await curl(secondURL, ["-X", "PUT", "-T", file.path + "/image.raw"]).status == 204)
            #expect(try await depot.settledPush(second.id).state == .done)
            try await expectGlanceHolds(glance.url, second.id, bytesOf: file.path + "/image.raw")
            #expect(try await curl(secondURL).body == bytes)
        }
    }

    /// A client that reads slowly holds Depot's memory to a few chunks: the cold fill goes to
    /// disk at the backend's pace, the client reads from disk at its own.
    @Test func aStalledReaderOfAColdImageDoesNotGrowDepotsMemory() async throws {
        let data = TemporaryDirectory("depot-stall")
        let depot = try await DepotProcess.start([
            "--data-dir", data.path, "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken, "--log-level", "warning",
        ])
        defer { Task { await depot.stop() } }
        let bytes = pseudoRandomBytes(count: 192 << 20, seed: 74)
        let image = try await uploadImage(glanceAsAlice(glance.url), bytes)
        let baseline = try residentBytes(of: depot.pid)
        let (peak, digest, total) = try await offThePool { () throws -> (UInt64, Digest, Int) in
            let fd = try connectLoopback(port: depot.port)
            defer { close(fd) }
            var small: Int32 = 64 * 1024
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            sendAll(fd, Array("GET /v2/images/\(image.id)/file HTTP/1.1\r\nHost: depot\r\nX-Auth-Token: \(GlanceServer.alice)\r\n\r\n".utf8))
            let hasher = DigestHasher(.sha256)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var headerDone = false, body = 0
            var peak: UInt64 = 0
            // Take 1 MiB, then stall 4 s while the fill runs to the end on the other side.
            while body < 1 << 20 {
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { break }
                var chunk = buffer[..<n]
                if !headerDone, let end = chunk.firstRange(of: Array("\r\n\r\n".utf8)) {
                    headerDone = true
                    chunk = chunk[end.upperBound...]
                }
                if headerDone {
                    chunk.withUnsafeBytes { hasher.update($0) }
                    body += chunk.count
                }
            }
            for _ in 0..<8 {
                Thread.sleep(forTimeInterval: 0.5)
                peak = max(peak, try residentBytes(of: depot.pid))
            }
            while body < bytes.count {
                let n = recv(fd, &buffer, min(buffer.count, bytes.count - body), 0)
                guard n > 0 else { break }
                buffer[..<n].withUnsafeBytes { hasher.update($0) }
                body += n
            }
            return (peak, hasher.finish(), body)
        }
        #expect(total == bytes.count)
        #expect(digest == Digest.of(bytes, algorithm: .sha256), "the slow reader got the image intact")
        print("stalled reader: depot RSS baseline \(baseline >> 20) MiB, peak while stalled \(peak >> 20) MiB")
        #expect(peak < baseline + (48 << 20), "Depot held the image in memory for a slow reader: \(baseline >> 20) → \(peak >> 20) MiB")
    }
}

/// Resident memory of a process, from /proc.
func residentBytes(of pid: pid_t) throws -> UInt64 {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kib = UInt64(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { throw CommandFailed(command: "read VmRSS of \(pid)", status: 1) }
    return kib * 1024
}

extension ServerLimitsTests {
    /// A client with a small receive buffer that sends `request`, reads its answer's first
    /// bytes and then reads no more; the socket (for the caller to close) and when it stopped.
    /// When a stalled reader sent its request and when it stopped reading.
    struct StallStart: Sendable {
        let requested: NIODeadline
        let stalled: NIODeadline
    }

    static func stallAfterFirstBytes(port: Int, _ request: String, _ started: Comment) throws -> (Int32, StallStart) {
        let requested = NIODeadline.now()
        let fd = try connectLoopback(port: port, receiveBuffer: 64 << 10)
        sendAll(fd, Array(request.utf8))
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(recv(fd, &buffer, buffer.count, 0) > 0, started)
        return (fd, StallStart(requested: requested, stalled: NIODeadline.now()))
    }

    /// Waits (up to 20 s) until Depot has no connection open, and says how long after `start`
    /// the last one closed, by Depot's own clock: a stall of the test process, which polls,
    /// does not count as Depot's (it once made a 2.5 s close look like 17.7 s). Nil when a
    /// connection is still open.
    /// Waits (up to 20 s) until Depot counts `count` connections open: every close processed.
    func waitForOpenConnections(_ depot: DepotHarness, _ count: Int) async throws {
        try await waitUntil("Depot counts \(count) connections open", timeout: .seconds(20), interval: .milliseconds(20)) { depot.server.openConnections == count }
    }

    func closeOfLastConnection(_ depot: DepotHarness, after start: NIODeadline) async throws -> TimeAmount? {
        let waitStart = ContinuousClock.now
        while depot.server.openConnections != 0, ContinuousClock.now - waitStart < .seconds(20) {
            try await Task.sleep(for: .milliseconds(20))
        }
        guard depot.server.openConnections == 0, let closed = depot.server.lastConnectionClosedAt else { return nil }
        return closed - start
    }
}
