import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import HTTPCore

/// The idle decision on its own: deadlines given, no clock.
@Suite struct IdleWatchStateMachineTests {
    typealias Machine = IdleWatchStateMachine
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func noProgressClosesAtTheTimeoutAfterQuarterChecks() {
        var machine = Machine(timeout: .seconds(4), now: start, progress: .init())
        #expect(machine.firstCheck == .seconds(1))
        #expect(machine.checked(now: start + .seconds(1), progress: .init()) == .checkAgain(after: .seconds(1)))
        #expect(machine.checked(now: start + .seconds(2), progress: .init()) == .checkAgain(after: .seconds(1)))
        #expect(machine.checked(now: start + .milliseconds(3500), progress: .init()) == .checkAgain(after: .milliseconds(500)), "the last check falls on the timeout")
        #expect(machine.checked(now: start + .seconds(4), progress: .init()) == .close)
    }

    @Test func anyCounterThatMovesRestartsTheClock() {
        var machine = Machine(timeout: .seconds(4), now: start, progress: .init())
        var progress = Machine.Progress()
        var now = start
        for counter in 0..<3 {
            now = now + .seconds(3)
            switch counter {
            case 0: progress.bytesAcknowledged += 1  // the client took one more byte
            case 1: progress.bytesReceived += 1  // the client sent one
            default: progress.reads += 1  // a read on a channel without TCP counters
            }
            #expect(machine.checked(now: now, progress: progress) == .checkAgain(after: .seconds(1)), "progress \(counter)")
        }
        #expect(machine.checked(now: now + .seconds(3), progress: progress) == .checkAgain(after: .seconds(1)))
        #expect(machine.checked(now: now + .seconds(4), progress: progress) == .close, "idle for 4 s after the last change")
    }

    @Test func aStalledTransferIsClosedOneTimeoutAfterItsLastAcknowledgedByte() {
        var machine = Machine(timeout: .seconds(2), now: start, progress: .init())
        // A slow download: acknowledged bytes rise at every check for 10 timeouts.
        var now = start
        var progress = Machine.Progress()
        for _ in 0..<40 {
            now = now + .milliseconds(500)
            progress.bytesAcknowledged += 65536
            #expect(machine.checked(now: now, progress: progress) == .checkAgain(after: .milliseconds(500)))
        }
        // Then the client stops reading: its window closes and nothing more is acknowledged.
        for _ in 0..<3 {
            now = now + .milliseconds(500)
            #expect(machine.checked(now: now, progress: progress) != .close)
        }
        #expect(machine.checked(now: now + .milliseconds(500), progress: progress) == .close)
    }

    @Test func aWaitOnDepotEndsAtItsOwnLimitAndTheClientsClockStartsAfresh() {
        var machine = Machine(timeout: .seconds(2), serverWaitLimit: .seconds(5), now: start, progress: .init())
        var now = start + .seconds(1)
        #expect(machine.checked(now: now, progress: .init()) == .checkAgain(after: .milliseconds(500)))
        // Depot's wait: up to 5 s, whatever the idle timeout.
        for _ in 0..<10 {
            now = now + .milliseconds(500)
            #expect(machine.checked(now: now, progress: .init(), waitingOnServer: true) != .close)
        }
        #expect(machine.checked(now: now + .milliseconds(500), progress: .init(), waitingOnServer: true) == .close, "stuck for 5 s")

        // A wait that ends in time hands the move back with the client's full timeout.
        machine = Machine(timeout: .seconds(2), serverWaitLimit: .seconds(5), now: start, progress: .init())
        now = start + .milliseconds(1500)
        #expect(machine.checked(now: now, progress: .init()) != .close, "1.5 s of the client's idling")
        now = now + .seconds(3)
        #expect(machine.checked(now: now, progress: .init(), waitingOnServer: true) != .close)
        #expect(machine.checked(now: now + .milliseconds(1900), progress: .init()) != .close, "the client's clock restarted")
        #expect(machine.checked(now: now + .seconds(2), progress: .init()) == .close)
        // A limit below the idle timeout is the idle timeout.
        #expect(Machine(timeout: .seconds(2), serverWaitLimit: .seconds(1), now: start, progress: .init()).serverWaitLimit == .seconds(2))
    }

    @Test func theClockDoesNotRunWhileTheClientWaitsOnDepot() {
        var machine = Machine(timeout: .seconds(2), serverWaitLimit: .seconds(60), now: start, progress: .init())
        // A miss whose backend takes 10 s to start: nothing moves, and it is Depot's move.
        var now = start
        for _ in 0..<20 {
            now = now + .milliseconds(500)
            #expect(machine.checked(now: now, progress: .init(), waitingOnServer: true) == .checkAgain(after: .milliseconds(500)))
        }
        // The answer went out and the client stopped reading it: its clock starts now.
        #expect(machine.checked(now: now + .milliseconds(1500), progress: .init()) == .checkAgain(after: .milliseconds(500)))
        #expect(machine.checked(now: now + .seconds(2), progress: .init()) == .close, "2 s of the client's own idling")
    }

    @Test func aTinyTimeoutStillChecksAtLeastEveryMillisecond() {
        var machine = Machine(timeout: .microseconds(100), now: start, progress: .init())
        #expect(machine.firstCheck == .milliseconds(1))
        #expect(machine.checked(now: start + .milliseconds(1), progress: .init()) == .close)
    }
}

/// The watch in a pipeline, on `EmbeddedChannel`'s clock, with counters the test moves.
@Suite struct IdleConnectionWatchTests {
    final class Counters: Sendable {
        let acknowledged = Mutex<UInt64>(0)
        /// nil: the kernel does not say (before Linux 4.6).
        let queued = Mutex<Bool?>(false)
        let awaitsResponse = Mutex(false)
        func source() -> IdleConnectionWatch.CounterSource {
            { _ in .init(bytesAcknowledged: self.acknowledged.withLock { $0 }, bytesReceived: 0, hasUnacknowledgedBytes: self.queued.withLock { $0 }) }
        }
    }

    func connectedChannel(_ counters: Counters?) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let watch = counters.map { counters in
            IdleConnectionWatch(
                timeout: .seconds(2), serverWaitLimit: .seconds(60), counters: counters.source(), awaitsResponse: { counters.awaitsResponse.withLock { $0 } })
        } ?? IdleConnectionWatch(timeout: .seconds(2))
        try channel.pipeline.syncOperations.addHandler(watch)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    @Test func anIdleConnectionIsClosedAtTheTimeout() throws {
        let channel = try connectedChannel(Counters())
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive, "2 s without progress")
    }

    @Test func readsKeepAConnectionWithoutTCPCountersOpen() throws {
        // EmbeddedChannel is not a socket: the default source finds no TCP_INFO.
        let channel = try connectedChannel(nil)
        for _ in 0..<10 {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
            try channel.writeInbound(ByteBuffer(string: "x"))
        }
        #expect(channel.isActive, "a read every 0.5 s for 5 s")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2500))
        #expect(!channel.isActive)
    }

    @Test func aLongWriteWhoseBytesAreAcknowledgedIsNotCutOff() throws {
        let counters = Counters()
        let channel = try connectedChannel(counters)
        // One write that does not complete for 10 s, as a large file region to a slow client:
        // only the acknowledged bytes show it is moving.
        channel.write(ByteBuffer(string: "a long response"), promise: nil)  // never flushed
        for _ in 0..<20 {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
            counters.acknowledged.withLock { $0 += 1 << 20 }
        }
        #expect(channel.isActive, "bytes were acknowledged throughout")
        // The client stops reading.
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2500))
        #expect(!channel.isActive, "nothing acknowledged for the timeout")
    }

    @Test func aClientWaitingOnDepotIsNotIdleButOneThatStopsReadingIs() throws {
        let counters = Counters()
        let channel = try connectedChannel(counters)
        // A request sent, and its answer waits on a backend for 10 s: nothing moves.
        counters.awaitsResponse.withLock { $0 = true }
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(channel.isActive, "the client waited on Depot, not the other way round")
        channel.embeddedEventLoop.advanceTime(by: .seconds(49))
        #expect(channel.isActive, "59 s of Depot's wait, within its 60 s")
        // The answer starts and the client stops reading it: Depot's bytes sit unacknowledged.
        counters.queued.withLock { $0 = true }
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2500))
        #expect(!channel.isActive, "a client that stopped reading is closed, answer in progress or not")
    }

    @Test func anAnswerStuckInDepotIsClosedAtTheResponseWaitLimit() throws {
        let counters = Counters()
        counters.awaitsResponse.withLock { $0 = true }
        let channel = try connectedChannel(counters)
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "nothing to read for 60 s: the answer is stuck")
    }

    @Test func aSendQueueTheKernelDoesNotShowIsTakenForTheClientsMove() throws {
        let counters = Counters()
        counters.queued.withLock { $0 = nil }
        counters.awaitsResponse.withLock { $0 = true }
        let channel = try connectedChannel(counters)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2500))
        #expect(!channel.isActive, "without the queue, a stalled reader and a wait on Depot look alike: closed")
    }

    @Test func theTimerStopsWithTheConnection() throws {
        let channel = try connectedChannel(Counters())
        try channel.close().wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!channel.isActive)
    }
}
