import Retry
import Testing

/// A random source that returns the given words in turn.
struct ScriptedRandom: RandomNumberGenerator {
    var words: [UInt64]
    var index = 0
    mutating func next() -> UInt64 {
        defer { index += 1 }
        return words[index % words.count]
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded source for the distribution check.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_4768_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct BackoffTests {
    let pushes = Backoff(initial: .seconds(2), maximum: .seconds(300))

    @Test func stepsDoubleUpToTheCap() {
        let steps = (1...10).map { pushes.step(afterFailures: $0) }
        #expect(steps == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map { Duration.seconds($0) })
        #expect(pushes.step(afterFailures: 0) == .seconds(2))
        #expect(pushes.step(afterFailures: -3) == .seconds(2))
        // No overflow however many failures: the doubling stops at the cap.
        #expect(pushes.step(afterFailures: .max) == .seconds(300))
        let glance = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        #expect((1...8).map { glance.step(afterFailures: $0) } == [100, 200, 400, 800, 1600, 3200, 5000, 5000].map { Duration.milliseconds($0) })
    }

    /// The wait runs from the whole step (random 0) down to half of it (random all ones).
    @Test func jitterSpansHalfToAllOfTheStep() {
        var low = ScriptedRandom(words: [0])
        #expect((1...4).map { pushes.delay(afterFailures: $0, using: &low) } == [2, 4, 8, 16].map { Duration.seconds($0) })
        var high = ScriptedRandom(words: [.max])
        let nearHalf = pushes.delay(afterFailures: 3, using: &high)
        #expect(nearHalf >= .seconds(4) && nearHalf < .milliseconds(4001))
        var middle = ScriptedRandom(words: [1 << 63])
        #expect(pushes.delay(afterFailures: 9, using: &middle) == .seconds(225))
        var none = ScriptedRandom(words: [.max])
        #expect(Backoff(initial: .seconds(1), maximum: .seconds(8), jitter: 0).delay(afterFailures: 3, using: &none) == .seconds(4))
    }

    /// Many clients failing together spread their retries over the whole interval.
    @Test func jitterSpreadsRetries() {
        var random = SplitMix(state: 42)
        let waits = (0..<10_000).map { _ in pushes.delay(afterFailures: 4, using: &random) }
        #expect(waits.allSatisfy { $0 > .seconds(8) && $0 <= .seconds(16) })
        let seconds = waits.map { Double($0.components.seconds) + Double($0.components.attoseconds) * 1e-18 }
        let mean = seconds.reduce(0, +) / Double(seconds.count)
        #expect(abs(mean - 12) < 0.1)
        let quarters = (0..<4).map { q in seconds.filter { Int(($0 - 8) / 2) == q }.count }
        #expect(quarters.allSatisfy { $0 > 2_300 && $0 < 2_700 }, "\(quarters)")
    }
}
