import DepotTestSupport

@testable import HTTPSemantics

/// What the parser made of a whole body: parts with their headers and bytes, whether the
/// closing delimiter came, the error if one was thrown (then nothing else: the parts that
/// came out before it depend on the split), and whether `finish()` accepted it.
struct MultipartOutcome: Equatable, Sendable, CustomStringConvertible {
    struct Part: Equatable, Sendable {
        var headers: [String: String]
        var data: [UInt8]
        var complete: Bool
    }

    var parts: [Part] = []
    var ended = false
    var error: String?
    var finished = false

    var description: String {
        let partText = parts.map { "{headers \($0.headers), \($0.data.count) bytes \(fuzzQuote($0.data, limit: 80))\($0.complete ? "" : ", incomplete")}" }
        return "parts [\(partText.joined(separator: ", "))], ended \(ended), finished \(finished), error \(error ?? "none")"
    }
}

struct GeneratedBody: Sendable {
    var boundary: String
    var bytes: [UInt8]
    /// The outcome the parts it was built from imply; nil once mutated.
    var expected: MultipartOutcome?
}

enum MultipartCheck {
    /// Feeds `bytes` cut at `cuts` and records the outcome, or a broken event-stream promise.
    static func parse(boundary: String, _ bytes: [UInt8], cuts: [Int]) -> (MultipartOutcome, violation: String?) {
        var outcome = MultipartOutcome()
        guard var parser = try? MultipartParser(boundary: boundary) else { return (outcome, "init failed") }
        var open = false
        var previous = 0
        for end in cuts + [bytes.count] where end >= previous {
            let events: [MultipartParser.Event]
            do {
                events = try parser.feed(bytes[previous..<end])
            } catch {
                // A feed that throws drops the events it had made: which parts came out
                // before the error depends on the split, the error itself must not.
                return (MultipartOutcome(error: error.message), nil)
            }
            previous = end
            for event in events {
                if outcome.ended { return (outcome, "event \(event) after the closing delimiter") }
                switch event {
                case let .partStart(headers):
                    if open { return (outcome, "a part started inside a part") }
                    outcome.parts.append(.init(headers: headers, data: [], complete: false))
                    open = true
                case let .partData(data):
                    if !open { return (outcome, "data outside a part") }
                    if data.isEmpty { return (outcome, "an empty data event") }
                    outcome.parts[outcome.parts.count - 1].data += data
                case .partEnd:
                    if !open { return (outcome, "a part ended that had not started") }
                    outcome.parts[outcome.parts.count - 1].complete = true
                    open = false
                case .end:
                    if open { return (outcome, "the body ended inside a part") }
                    outcome.ended = true
                }
            }
        }
        outcome.finished = (try? parser.finish()) != nil
        if outcome.finished != outcome.ended { return (outcome, "finish() \(outcome.finished ? "accepted" : "refused") a body that \(outcome.ended ? "ended" : "did not end")") }
        return (outcome, nil)
    }

    static func failure(_ body: GeneratedBody, cutSets: [[Int]]) -> String? {
        let boundary = body.boundary
        let acceptable = !boundary.isEmpty && boundary.utf8.count <= 70
        if (try? MultipartParser(boundary: boundary)) == nil {
            return acceptable ? "init refused the boundary" : nil
        }
        if !acceptable { return "init took a boundary of \(boundary.utf8.count) bytes" }
        let (first, violation) = parse(boundary: boundary, body.bytes, cuts: [])
        if let violation { return "one-shot feed: \(violation)" }
        for cuts in cutSets {
            let (outcome, violation) = parse(boundary: boundary, body.bytes, cuts: cuts)
            if let violation { return "feed cut at \(cuts.prefix(40)): \(violation)" }
            if outcome != first { return "cut at \(cuts.prefix(40)) gave \(outcome); in one piece \(first)" }
        }
        let reference = MultipartReference.parse(boundary: boundary, body.bytes)
        if first != reference { return "the parser gave \(first); the reference gives \(reference)" }
        if let expected = body.expected, first != expected { return "built from \(expected), parsed as \(first)" }
        return nil
    }
}
