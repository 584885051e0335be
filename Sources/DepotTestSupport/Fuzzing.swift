import Foundation

// A small property-based fuzzing harness for the parser fuzz tests: a seeded PRNG, the
// input count and seed from the environment, a per-input and per-property time guard, a
// watchdog for real hangs, and a shrinker for failing inputs. No Testing import: the tests
// turn a `FuzzReport` into expectations.
//
//   DEPOT_FUZZ_INPUTS  inputs per property (default: what each property asks for, sized so
//                      the fuzz suite takes ~30 s in a debug build on 2 cores)
//   DEPOT_FUZZ_SEED    the run's seed (decimal or 0x-hex); random and printed when absent
//   DEPOT_FUZZ_INPUT   run only this input index of each property (replaying a failure)

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to drive generators.
public struct FuzzRNG: RandomNumberGenerator {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_4768_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0..<n` (n > 0); Lemire's multiply-shift, bias irrelevant here.
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// Uniform in `range`.
    public mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) * 0x1p-53 < p }

    public mutating func pick<C: Collection>(_ items: C) -> C.Element {
        items[items.index(items.startIndex, offsetBy: below(items.count))]
    }

    /// Picks by weight: `[(3, a), (1, b)]` gives `a` three times as often.
    public mutating func weighted<T>(_ choices: [(Int, T)]) -> T {
        var roll = below(choices.reduce(0) { $0 + $1.0 })
        for (weight, value) in choices {
            if roll < weight { return value }
            roll -= weight
        }
        return choices[choices.count - 1].1
    }

    /// A size skewed towards small values: mostly under 16, sometimes up to `max`.
    public mutating func smallCount(max: Int) -> Int {
        switch below(10) {
        case 0..<6: return below(Swift.min(max, 4) + 1)
        case 6..<9: return below(Swift.min(max, 16) + 1)
        default: return below(max + 1)
        }
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            var word = next()
            for _ in 0..<Swift.min(8, count - index) {
                out[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return out
    }
}

/// Byte-level mutations of a seed input (the classic fuzzer moves), optionally biased towards
/// the `interesting` byte strings of the format (delimiters, digits, quotes...).
public func mutate(_ input: [UInt8], rng: inout FuzzRNG, rounds: Int, interesting: [[UInt8]] = []) -> [UInt8] {
    var bytes = input
    for _ in 0..<rounds {
        let position = bytes.isEmpty ? 0 : rng.below(bytes.count + 1)
        switch rng.below(interesting.isEmpty ? 8 : 10) {
        case 0 where !bytes.isEmpty:  // flip a bit
            let at = Swift.min(position, bytes.count - 1)
            bytes[at] ^= 1 << UInt8(rng.below(8))
        case 1 where !bytes.isEmpty:  // replace a byte
            bytes[Swift.min(position, bytes.count - 1)] = UInt8(truncatingIfNeeded: rng.next())
        case 2:  // insert random bytes
            bytes.insert(contentsOf: rng.bytes(rng.int(1...4)), at: position)
        case 3 where !bytes.isEmpty:  // delete a run
            let at = rng.below(bytes.count)
            bytes.removeSubrange(at..<(at + Swift.min(rng.int(1...8), bytes.count - at)))
        case 4 where !bytes.isEmpty:  // duplicate a slice
            let from = rng.below(bytes.count)
            let slice = Array(bytes[from..<Swift.min(bytes.count, from + rng.int(1...32))])
            bytes.insert(contentsOf: slice, at: position)
        case 5 where !bytes.isEmpty:  // truncate
            bytes.removeSubrange(rng.below(bytes.count)...)
        case 6:  // a special byte: NUL, CR, LF, space, tab, 0x7F, 0x80, 0xFF
            bytes.insert(rng.pick([0, 13, 10, 32, 9, 0x7F, 0x80, 0xFF] as [UInt8]), at: position)
        case 7:  // a multi-byte UTF-8 sequence, incl. combining marks and keycaps
            let samples: [String] = ["\u{301}", "é", "日", "🚀", "\u{FE0F}\u{20E3}", "\u{200D}", "\u{FFFD}", "٣", "５", "\u{00A0}"]
            bytes.insert(contentsOf: Array(rng.pick(samples).utf8), at: position)
        default:  // an interesting token of the format
            bytes.insert(contentsOf: rng.pick(interesting), at: position)
        }
    }
    return bytes
}

/// Greedy delta-debugging: removes chunks (halving their size) while `stillFails` holds.
/// Bounded by `maxChecks` calls of the predicate and by `deadline`.
public func shrink<T>(_ input: [T], maxChecks: Int = 4000, deadline: Duration = .seconds(5), stillFails: ([T]) -> Bool) -> [T] {
    var current = input
    var checks = 0
    var chunk = Swift.max(1, current.count / 2)
    let end = ContinuousClock.now + deadline
    while chunk >= 1 && checks < maxChecks && ContinuousClock.now < end {
        var start = 0
        var removedAny = false
        while start < current.count && checks < maxChecks && ContinuousClock.now < end {
            var candidate = current
            candidate.removeSubrange(start..<Swift.min(current.count, start + chunk))
            checks += 1
            if stillFails(candidate) {
                current = candidate
                removedAny = true
            } else {
                start += chunk
            }
        }
        if !removedAny { chunk /= 2 }
    }
    return current
}

public func shrink(_ input: String, maxChecks: Int = 4000, stillFails: (String) -> Bool) -> String {
    var view = String.UnicodeScalarView()
    let scalars = shrink(Array(input.unicodeScalars), maxChecks: maxChecks) { candidate in
        view = String.UnicodeScalarView()
        view.append(contentsOf: candidate)
        return stillFails(String(view))
    }
    view = String.UnicodeScalarView()
    view.append(contentsOf: scalars)
    return String(view)
}

/// A string literal that shows control characters and non-ASCII scalars unambiguously.
public func fuzzQuote(_ text: String, limit: Int = 600) -> String {
    var out = "\""
    for scalar in text.unicodeScalars.prefix(limit) {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\r": out += "\\r"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case " "..."~": out.unicodeScalars.append(scalar)
        default: out += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    if text.unicodeScalars.count > limit { out += "…(\(text.unicodeScalars.count) scalars)" }
    return out + "\""
}

public func fuzzQuote(_ bytes: [UInt8], limit: Int = 600) -> String {
    var out = "\""
    for byte in bytes.prefix(limit) {
        switch byte {
        case 0x22: out += "\\\""
        case 0x5C: out += "\\\\"
        case 13: out += "\\r"
        case 10: out += "\\n"
        case 9: out += "\\t"
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(byte))
        default: out += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }
    }
    if bytes.count > limit { out += "…(\(bytes.count) bytes)" }
    return out + "\""
}

/// The run's settings: inputs per property and the seed.
public struct FuzzSettings: Sendable {
    public let inputs: Int
    public let seed: UInt64
    /// Only this input index (a replay), or nil for all.
    public let only: Int?

    public static func current(defaultInputs: Int) -> FuzzSettings {
        let environment = ProcessInfo.processInfo.environment
        let inputs = environment["DEPOT_FUZZ_INPUTS"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { max(1, $0) } ?? defaultInputs
        return FuzzSettings(inputs: inputs, seed: runSeed, only: environment["DEPOT_FUZZ_INPUT"].flatMap { Int($0) })
    }

    /// One seed for the whole process, so every property of a run prints the same one.
    static let runSeed: UInt64 = {
        if let text = ProcessInfo.processInfo.environment["DEPOT_FUZZ_SEED"]?.trimmingCharacters(in: .whitespaces).lowercased() {
            if text.hasPrefix("0x"), let value = UInt64(text.dropFirst(2), radix: 16) { return value }
            if let value = UInt64(text) { return value }
        }
        var system = SystemRandomNumberGenerator()
        return system.next()
    }()
}

/// One failing input of a property.
public struct FuzzFailure: Sendable, CustomStringConvertible {
    public let index: Int
    public let message: String
    public var description: String { "input #\(index): \(message)" }
}

/// What a property run did.
public struct FuzzReport: Sendable, CustomStringConvertible {
    public let property: String
    public let seed: UInt64
    public let inputs: Int
    public let wall: Duration
    public let cpu: Duration
    /// The CPU time of the slowest input and its index.
    public let slowest: Duration
    public let slowestIndex: Int
    public let perInputLimit: Duration
    public let totalLimit: Duration
    public let failures: [FuzzFailure]
    public let failureCount: Int
    /// Property-specific counters (how many inputs hit which case), for the summary line.
    public let counters: [String: Int]

    public var slowInputs: Bool { slowest > perInputLimit }
    public var overBudget: Bool { cpu > totalLimit }
    public var passed: Bool { failureCount == 0 && !slowInputs && !overBudget }

    public var replay: String { "DEPOT_FUZZ_SEED=0x\(String(seed, radix: 16))" }

    public var description: String {
        let counterText = counters.isEmpty ? "" : " [" + counters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "]"
        return "fuzz \(property): \(inputs) inputs, seed 0x\(String(seed, radix: 16)), \(Self.seconds(wall)) s wall, \(Self.seconds(cpu)) s cpu "
            + "(limit \(Self.seconds(totalLimit)) s), slowest input #\(slowestIndex) \(Self.milliseconds(slowest)) ms, "
            + "\(failureCount) failures\(counterText)"
    }

    /// The failures, each with how to replay it.
    public var failureText: String {
        var lines = ["\(failureCount) of \(inputs) inputs of \(property) failed; replay with \(replay) (and DEPOT_FUZZ_INPUT=N for one input)"]
        lines += failures.map { "  \($0)" }
        if slowInputs {
            lines.append("  input #\(slowestIndex) took \(Self.milliseconds(slowest)) ms of CPU (limit \(Self.milliseconds(perInputLimit)) ms)")
        }
        if overBudget { lines.append("  the property took \(Self.seconds(cpu)) s of CPU, over its bound of \(Self.seconds(totalLimit)) s") }
        return lines.joined(separator: "\n")
    }

    static func seconds(_ d: Duration) -> String { String(format: "%.2f", Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18) }
    static func milliseconds(_ d: Duration) -> String {
        String(format: "%.1f", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) * 1e-15)
    }
}

/// Counts cases inside a property, for the summary line (so a generator that stopped
/// producing some case shows).
public final class FuzzCounters: @unchecked Sendable {
    private(set) var values: [String: Int] = [:]
    public init() {}
    public func count(_ name: String) { values[name, default: 0] += 1 }
}

/// The CPU time of the calling thread.
func threadCPUTime() -> Duration {
    var spec = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
    return .seconds(Int64(spec.tv_sec)) + .nanoseconds(Int64(spec.tv_nsec))
}

/// Aborts the process when one input runs for `limit` of wall-clock time: a hang would
/// otherwise block the test run forever. It prints how to replay the input first.
final class FuzzWatchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var current: (index: Int, started: ContinuousClock.Instant)?
    private var finished = false
    private let property: String
    private let replay: String
    private let limit: Duration

    init(property: String, replay: String, limit: Duration) {
        self.property = property
        self.replay = replay
        self.limit = limit
        let thread = Thread { [self] in watch() }
        thread.stackSize = 1 << 20
        thread.start()
    }

    func begin(_ index: Int, at now: ContinuousClock.Instant) {
        lock.lock()
        current = (index, now)
        lock.unlock()
    }

    func stop() {
        lock.lock()
        finished = true
        lock.unlock()
    }

    private func watch() {
        while true {
            Thread.sleep(forTimeInterval: 0.25)
            lock.lock()
            let (done, running) = (finished, current)
            lock.unlock()
            if done { return }
            if let running, ContinuousClock.now - running.started > limit {
                let message = "fuzz \(property): input #\(running.index) has run for more than \(limit): a hang. Replay: \(replay) DEPOT_FUZZ_INPUT=\(running.index)\n"
                FileHandle.standardError.write(Data(message.utf8))
                print(message)
                fflush(nil)
                fatalError(message)
            }
        }
    }
}

/// Says which input each running property was at when the process crashes (a trap in the
/// code under test kills the whole test process, so the failure cannot be reported the usual
/// way). Signal-safe: fixed slots, preformatted text, write(2); then the previous handler
/// (Swift's backtracer) runs.
enum FuzzCrashReporter {
    static let slotCount = 32
    nonisolated(unsafe) static let indices: UnsafeMutablePointer<Int> = {
        let pointer = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
        pointer.initialize(repeating: -1, count: slotCount)
        return pointer
    }()
    nonisolated(unsafe) static let labels = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: slotCount)
    nonisolated(unsafe) static let previous: UnsafeMutablePointer<sigaction> = {
        let pointer = UnsafeMutablePointer<sigaction>.allocate(capacity: 32)
        memset(pointer, 0, 32 * MemoryLayout<sigaction>.stride)
        return pointer
    }()
    static let lock = NSLock()
    nonisolated(unsafe) static var installed = false
    nonisolated(unsafe) static var used = [Bool](repeating: false, count: slotCount)

    /// A slot for a property, or nil when all are taken.
    static func claim(label: String) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        if !installed {
            installed = true
            for signal in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] {
                var action = sigaction()
                #if os(Linux)
                action.__sigaction_handler.sa_handler = { signal in FuzzCrashReporter.crashed(signal) }
                #else
                action.__sigaction_u.__sa_handler = { signal in FuzzCrashReporter.crashed(signal) }
                #endif
                action.sa_flags = SA_ONSTACK
                sigaction(signal, &action, previous + Int(signal))
            }
        }
        guard let slot = used.firstIndex(of: false) else { return nil }
        used[slot] = true
        labels[slot] = strdup(label)
        indices[slot] = -1
        return slot
    }

    static func release(_ slot: Int) {
        lock.lock()
        defer { lock.unlock() }
        indices[slot] = -1
        used[slot] = false
    }

    static func crashed(_ signal: Int32) {
        for slot in 0..<slotCount where indices[slot] >= 0 {
            guard let label = labels[slot] else { continue }
            write(2, label, strlen(label))
            var digits = [CChar](repeating: 0, count: 24)
            var value = indices[slot], count = 0
            repeat {
                digits[count] = CChar(48 + value % 10)
                value /= 10
                count += 1
            } while value > 0
            var text = [CChar](repeating: 0, count: 25)
            for k in 0..<count { text[k] = digits[count - 1 - k] }
            text[count] = 10
            write(2, text, count + 1)
        }
        // Let the previous handler (the backtracer) run when the fault repeats.
        sigaction(signal, previous + Int(signal), nil)
        if signal == SIGABRT { raise(signal) }
    }
}

/// Runs a property over generated inputs: `generate` makes an input from a generator seeded
/// for it (the same for the same run seed and index), `check` returns nil when the property
/// holds or what went wrong, and `explain` (untimed, for the first failures only) describes a
/// failing input, typically shrunk to a minimal one. Runs on a thread of its own, off Swift's
/// cooperative pool.
///
/// - Parameters:
///   - cpuPerInput: the property's CPU budget per input; the whole property must finish
///     within `inputs * cpuPerInput` (plus a second of slack) of CPU time.
///   - perInputLimit: no single input may take more CPU time than this.
///   - hangLimit: wall-clock time after which one input is a hang (the process aborts).
public func fuzz<Input>(
    _ property: String, defaultInputs: Int, cpuPerInput: Duration, perInputLimit: Duration = .seconds(1), hangLimit: Duration = .seconds(60),
    generate: @escaping @Sendable (inout FuzzRNG, FuzzCounters) -> Input,
    check: @escaping @Sendable (Input, FuzzCounters?) -> String?,
    explain: (@Sendable (Input) -> String)? = nil
) async -> FuzzReport {
    let settings = FuzzSettings.current(defaultInputs: defaultInputs)
    return await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(
                returning: runFuzz(
                    property, settings: settings, cpuPerInput: cpuPerInput, perInputLimit: perInputLimit, hangLimit: hangLimit,
                    generate: generate, check: check, explain: explain))
        }
        thread.stackSize = 16 << 20
        thread.start()
    }
}

func runFuzz<Input>(
    _ property: String, settings: FuzzSettings, cpuPerInput: Duration, perInputLimit: Duration, hangLimit: Duration,
    generate: (inout FuzzRNG, FuzzCounters) -> Input, check: (Input, FuzzCounters?) -> String?, explain: ((Input) -> String)?
) -> FuzzReport {
    // Each property gets its own stream, derived from the run seed and its name (FNV-1a).
    var nameHash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in property.utf8 { nameHash = (nameHash ^ UInt64(byte)) &* 0x100_0000_01B3 }
    var mixer = FuzzRNG(seed: settings.seed ^ nameHash)
    let propertySeed = mixer.next()

    let counters = FuzzCounters()
    let replay = "DEPOT_FUZZ_SEED=0x\(String(settings.seed, radix: 16))"
    print("fuzz \(property): \(settings.only.map { "input #\($0)" } ?? "\(settings.inputs) inputs"), seed 0x\(String(settings.seed, radix: 16))")
    let watchdog = FuzzWatchdog(property: property, replay: replay, limit: hangLimit)
    let slot = FuzzCrashReporter.claim(label: "fuzz \(property) was running when the process crashed; replay with \(replay) DEPOT_FUZZ_INPUT=")
    defer {
        watchdog.stop()
        if let slot { FuzzCrashReporter.release(slot) }
    }
    var failures: [FuzzFailure] = []
    var failureCount = 0
    var slowest = Duration.zero
    var slowestIndex = 0
    var explaining = Duration.zero
    let indices = settings.only.map { [$0] } ?? Array(0..<settings.inputs)
    let wallStart = ContinuousClock.now
    let cpuStart = threadCPUTime()
    for index in indices {
        var seeder = FuzzRNG(seed: propertySeed &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03)
        var rng = FuzzRNG(seed: seeder.next())
        watchdog.begin(index, at: .now)
        if let slot { FuzzCrashReporter.indices[slot] = index }
        let before = threadCPUTime()
        let input = generate(&rng, counters)
        let failure = check(input, counters)
        let spent = threadCPUTime() - before
        if spent > slowest {
            slowest = spent
            slowestIndex = index
        }
        if let failure {
            failureCount += 1
            if failures.count < 5 {
                let started = threadCPUTime()
                let detail = explain.map { "\n      " + $0(input) } ?? ""
                explaining += threadCPUTime() - started
                failures.append(FuzzFailure(index: index, message: failure + detail))
            }
        }
    }
    let cpu = threadCPUTime() - cpuStart - explaining
    return FuzzReport(
        property: property, seed: settings.seed, inputs: indices.count, wall: ContinuousClock.now - wallStart, cpu: cpu,
        slowest: slowest, slowestIndex: slowestIndex, perInputLimit: perInputLimit, totalLimit: cpuPerInput * indices.count + .seconds(1),
        failures: failures, failureCount: failureCount, counters: counters.values)
}
