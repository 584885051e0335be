@testable import Glance
import Foundation
import Testing

/// The transfer layer's state machines, without sockets or a loop: the bounded body queue with
/// libcurl's pause semantics (`CURL_WRITEFUNC_PAUSE`: the chunk is not taken and comes again
/// after the unpause), stall detection, and where a resumed download continues (RFC 9110
/// sections 14.2 and 14.4).
@Suite struct ByteFlowTests {
    @Test func aFullQueuePausesTheProducerUntilTheConsumerDrainsHalf() {
        var flow = ByteFlow(capacity: 8)
        #expect(flow.offer([1, 2, 3]) == .accepted(wakeConsumer: false))
        #expect(flow.offer([4, 5, 6]) == .accepted(wakeConsumer: false))
        #expect(flow.offer([7, 8, 9]) == .accepted(wakeConsumer: false), "room was left: one chunk may overshoot")
        #expect(flow.offer([10]) == .full)
        #expect(flow.state == .pausedByConsumer)
        #expect(flow.offer([10]) == .full, "still paused: the same chunk is refused until woken")
        guard case let .chunks(first, wakeAfterFirst) = flow.take(upTo: 3) else { Issue.record("expected a chunk"); return }
        #expect(first == [[1, 2, 3]])
        #expect(!wakeAfterFirst, "6 bytes left is more than half of 8")
        guard case let .chunks(_, wakeAfterSecond) = flow.take(upTo: 3) else { Issue.record("expected a chunk"); return }
        #expect(wakeAfterSecond, "3 bytes left: the producer resumes once")
        #expect(flow.state == .running)
        #expect(flow.offer([10]) == .accepted(wakeConsumer: false))
    }

    @Test func aWaitingConsumerIsWokenByTheNextChunkOnce() {
        var flow = ByteFlow(capacity: 8)
        guard case .idle(.wait) = flow.take() else { Issue.record("an empty queue makes the consumer wait"); return }
        #expect(flow.consumerWaiting)
        #expect(flow.offer([1]) == .accepted(wakeConsumer: true))
        #expect(flow.offer([2]) == .accepted(wakeConsumer: false))
    }

    @Test func takeBatchesWholeChunksWithinTheLimitButAlwaysAtLeastOne() {
        var flow = ByteFlow(capacity: 64)
        for chunk: [UInt8] in [[1, 2, 3], [4, 5, 6], [7, 8, 9]] { _ = flow.offer(chunk) }
        guard case let .chunks(batch, _) = flow.take(upTo: 7) else { Issue.record("expected chunks"); return }
        #expect(batch == [[1, 2, 3], [4, 5, 6]])
        guard case let .chunks(single, _) = flow.take(upTo: 1) else { Issue.record("expected a chunk"); return }
        #expect(single == [[7, 8, 9]])
        #expect(flow.buffered == 0)
    }

    @Test func aConsumerThatAsksForABatchIsWokenOnceWhenItIsQueuedOrTheProducerEnds() {
        var flow = ByteFlow(capacity: 16)
        _ = flow.offer([1, 2, 3])
        guard case .idle(.wait) = flow.take(atLeast: 8) else { Issue.record("3 of 8 bytes queued: the consumer waits"); return }
        #expect(!flow.isReady(atLeast: 8))
        #expect(flow.isReady(atLeast: 3))
        #expect(flow.offer([4, 5, 6]) == .accepted(wakeConsumer: false), "6 of 8: not yet")
        #expect(flow.offer([7, 8, 9]) == .accepted(wakeConsumer: true), "9 of 8: woken")
        #expect(flow.offer([10]) == .accepted(wakeConsumer: false), "woken once")
        guard case let .chunks(batch, _) = flow.take(atLeast: 8) else { Issue.record("expected the batch"); return }
        #expect(batch == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]])

        _ = flow.offer([11])
        guard case .idle(.wait) = flow.take(atLeast: 8) else { Issue.record("1 of 8: the consumer waits"); return }
        #expect(flow.finish(failure: nil) == (wakeConsumer: true, wakeProducer: false), "the end wakes it with fewer")
        guard case let .chunks(last, _) = flow.take(atLeast: 8) else { Issue.record("the last byte comes however few"); return }
        #expect(last == [[11]])
        guard case .idle(.end) = flow.take(atLeast: 8) else { Issue.record("then the end"); return }
    }

    @Test func aBatchLargerThanTheQueueIsCutToItsCapacitySoAFullQueueAlwaysWakesTheConsumer() {
        var flow = ByteFlow(capacity: 4)
        guard case .idle(.wait) = flow.take(atLeast: 100) else { Issue.record("nothing queued: the consumer waits"); return }
        #expect(flow.offer([1, 2]) == .accepted(wakeConsumer: false))
        #expect(flow.offer([3, 4]) == .accepted(wakeConsumer: true), "the queue is full: the consumer is woken, not left waiting for 100")
        #expect(flow.offer([5]) == .full)
        #expect(flow.isReady(atLeast: 100), "the producer waits on the consumer: what is queued is taken")
        guard case let .chunks(batch, wakeProducer) = flow.take(atLeast: 100) else { Issue.record("expected the queue"); return }
        #expect(batch == [[1, 2], [3, 4]])
        #expect(wakeProducer)
    }

    @Test func theConsumerSeesQueuedBytesBeforeTheEndOrTheFailure() {
        struct Reset: Error {}
        var clean = ByteFlow(capacity: 8)
        _ = clean.offer([1])
        #expect(clean.finish(failure: nil) == (wakeConsumer: false, wakeProducer: false))
        guard case .chunks = clean.take() else { Issue.record("queued bytes come first"); return }
        guard case .idle(.end) = clean.take() else { Issue.record("then the end"); return }

        var failed = ByteFlow(capacity: 8)
        _ = failed.take()
        #expect(failed.finish(failure: Reset()) == (wakeConsumer: true, wakeProducer: false))
        guard case let .idle(.failed(error)) = failed.take() else { Issue.record("the failure reaches the consumer"); return }
        #expect(error is Reset)
        #expect(failed.offer([1]) == .refused)
    }

    @Test func aConsumerThatGoesAwayStopsTheProducerOnlyWhileItRuns() {
        var paused = ByteFlow(capacity: 1)
        _ = paused.offer([1])
        #expect(paused.offer([2]) == .full)
        let change = paused.cancel()
        #expect(change == (producerWasActive: true, wakeProducer: true, wakeConsumer: false))
        #expect(paused.offer([2]) == .refused)
        guard case .idle(.cancelled) = paused.take() else { Issue.record("a cancelled flow ends its consumer"); return }

        var done = ByteFlow(capacity: 8)
        _ = done.offer([1])
        _ = done.finish(failure: nil)
        #expect(done.cancel() == (producerWasActive: false, wakeProducer: false, wakeConsumer: false))
    }

    @Test func readSplitsChunksAtTheCallersBufferAndWaitsWhenEmpty() {
        var flow = ByteFlow(capacity: 4)
        _ = flow.offer([1, 2, 3])
        _ = flow.offer([4, 5])
        #expect(flow.offer([6]) == .full)
        var out = [UInt8](repeating: 0, count: 2)
        var reads: [[UInt8]] = []
        for _ in 0..<3 {
            guard case let .bytes(n, _) = out.withUnsafeMutableBytes({ flow.read(into: $0) }) else { break }
            reads.append(Array(out[..<n]))
        }
        #expect(reads == [[1, 2], [3, 4], [5]])
        #expect(flow.state == .running, "drained: the paused producer was woken")
        guard case .idle(.wait) = out.withUnsafeMutableBytes({ flow.read(into: $0) }) else { Issue.record("empty: the reader waits"); return }
        _ = flow.finish(failure: nil)
        guard case .idle(.end) = out.withUnsafeMutableBytes({ flow.read(into: $0) }) else { Issue.record("then the end"); return }
    }
}

@Suite struct StallWindowTests {
    let start = ContinuousClock.now

    @Test func aTransferThatMovesTooLittleForTheWindowIsStalled() {
        var window = StallWindow(limit: .seconds(2), minimumSpeed: 1024, now: start)
        window.moved(100)
        #expect(window.check(at: start + .milliseconds(1900)) == nil)
        #expect(window.check(at: start + .seconds(2)) == 2.0)
    }

    @Test func aWindowThatKeptUpStartsTheNext() {
        var window = StallWindow(limit: .seconds(2), minimumSpeed: 1024, now: start)
        window.moved(4096)
        #expect(window.check(at: start + .seconds(2)) == nil)
        #expect(window.check(at: start + .seconds(3)) == nil)
        #expect(window.check(at: start + .seconds(4)) == 2.0)
    }

    @Test func timePausedForDepotsOwnSideDoesNotCount() {
        var window = StallWindow(limit: .seconds(2), minimumSpeed: 1024, now: start)
        window.pause(at: start + .milliseconds(500))
        #expect(window.check(at: start + .seconds(30)) == nil, "paused the whole time")
        window.resume(at: start + .seconds(40))
        #expect(window.check(at: start + .seconds(41)) == nil)
        #expect(window.check(at: start + .milliseconds(41_500)) == 2.0)
    }
}

@Suite struct ResumePlanTests {
    func head(_ status: Int, _ headers: [(String, String)]) -> HTTPResponseHead {
        HTTPResponseHead(status: status, headers: headers.map { (name: $0.0, value: $0.1) })
    }

    @Test func aWholeImageCutMidwayResumesFromTheNextByteAndKeepsTheFirstHead() throws {
        var plan = ResumePlan(url: "u", range: nil, maxRetries: 3)
        #expect(plan.range == nil, "nothing asked, nothing received: the whole image")
        let first = try plan.accept(head(200, [("Content-Length", "100"), ("Content-MD5", "abc")]))
        #expect(first.length == 100 && first.totalSize == 100)
        plan.received(40)
        #expect(plan.range == "40-99")
        let resumed = try plan.accept(head(206, [("Content-Range", "bytes 40-99/100"), ("Content-Length", "60")]))
        #expect(resumed == first)
        plan.received(60)
        #expect(plan.shortfall == nil)
    }

    @Test func aRangeDownloadAsksForItsRangeAndLearnsTheTotal() throws {
        var plan = ResumePlan(url: "u", range: 10...19, maxRetries: 3)
        #expect(plan.range == "10-19")
        let opened = try plan.accept(head(206, [("Content-Range", "bytes 10-19/100"), ("Content-Length", "10")]))
        #expect(opened.range == 10...19 && opened.totalSize == 100)
        plan.received(4)
        #expect(plan.range == "14-19")
        guard case let .sizeMismatch(expected, received, _)? = plan.shortfall else { Issue.record("a short end is a size mismatch"); return }
        #expect(expected == 10 && received == 4)
    }

    /// A server may ignore Range (RFC 9110 section 14.2): its 200 starts at byte 0, and a 206
    /// elsewhere is not the continuation; neither may be appended.
    @Test func aResumeThatDoesNotContinueWhereTheBytesStoppedIsRefused() throws {
        var plan = ResumePlan(url: "u", range: nil, maxRetries: 3)
        _ = try plan.accept(head(200, [("Content-Length", "100")]))
        plan.received(40)
        #expect(throws: GlanceError.self) { try plan.accept(head(200, [("Content-Length", "100")])) }
        #expect(throws: GlanceError.self) { try plan.accept(head(206, [("Content-Range", "bytes 0-99/100")])) }
        #expect(throws: GlanceError.self) { try plan.accept(head(206, [])) }
    }

    /// A backend's 206 to a request without a range, ending at the last byte a UInt64 can
    /// name, leaves no end to state: refused, where the end's sum trapped.
    @Test func aContentRangeEndingAtTheLargestByteIsRefused() throws {
        var plan = ResumePlan(url: "u", range: nil, maxRetries: 3)
        #expect(throws: GlanceError.self) { try plan.accept(head(206, [("Content-Range", "bytes 0-18446744073709551615/*")])) }
        var fine = ResumePlan(url: "u", range: nil, maxRetries: 3)
        let opened = try fine.accept(head(206, [("Content-Range", "bytes 0-18446744073709551614/*")]))
        #expect(opened.range == 0...18_446_744_073_709_551_614)
    }

    @Test func onlyTransientFailuresAreRetriedAndOnlyUpToTheLimit() {
        var plan = ResumePlan(url: "u", range: nil, maxRetries: 2)
        let unavailable = GlanceError.http(status: 503, message: "", method: "GET", url: "u")
        let answers = [
            plan.retry(after: .http(status: 404, message: "", method: "GET", url: "u")), plan.retry(after: unavailable),
            plan.retry(after: .transport(message: "reset", method: "GET", url: "u", curlCode: 56)), plan.retry(after: unavailable),
        ]
        #expect(answers == [false, true, true, false])
        #expect(plan.retries == 2)
    }
}

/// The transfer loop's thread, as an operator sees it in `top -H`, perf or /proc.
@Suite struct TransferLoopThreadTests {
    @Test func theLoopsThreadCarriesItsOwnName() async throws {
        _ = TransferLoop.shared
        func names() -> [String] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
                .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        // The thread names itself as it starts.
        for _ in 0..<100 where !names().contains("depot-curl") { try await Task.sleep(for: .milliseconds(10)) }
        #expect(names().contains("depot-curl"))
    }
}

/// An image record's sizes as Glance states them: BIGINT, so 0 to Int64.max.
@Suite struct ImageRecordSizeTests {
    func size(_ literal: String) throws -> UInt64? {
        try JSONDecoder().decode(GlanceImage.self, from: Data(#"{"id": "i", "status": "active", "size": \#(literal)}"#.utf8)).size
    }

    /// A faulty backend's size past BIGINT is no size: 2^64 and up trapped in the conversion,
    /// and one past 2^63 later in a fill's arithmetic.
    @Test func aSizePastGlancesBigintIsNoSize() throws {
        #expect(try size("18446744073709551615") == nil)
        #expect(try size("1e20") == nil)
        #expect(try size("9223372036854775808") == nil)
        #expect(try size("9223372036854774784") == 9_223_372_036_854_774_784)
        #expect(try size("0") == 0)
        #expect(try size("-1") == nil)
        #expect(try size("1.5") == nil)
        #expect(try size("null") == nil)
    }
}
