/// Walks a plan's body while the representation's bytes arrive in order: each batch of bytes
/// comes back as the body pieces it completes (part headers and delimiters included), so a
/// path that reads the representation once, front to back, sends exactly the planned body.
public struct BodyCursor: Sendable {
    private let segments: [ResponsePlan.Segment]
    private var index = 0

    public init(_ plan: ResponsePlan) { segments = plan.body }

    /// Whether every piece of the body has been returned.
    public var isFinished: Bool { index == segments.count }

    /// Takes representation bytes that start at `offset` and returns the body pieces they
    /// complete, in sending order.
    ///
    /// Bytes must come in increasing offsets without gaps inside a planned range (bytes
    /// between ranges may be skipped). The returned slices share storage with `bytes`.
    public mutating func feed(_ bytes: ArraySlice<UInt8>, at offset: UInt64) -> [ArraySlice<UInt8>] {
        var pieces: [ArraySlice<UInt8>] = []
        let end = offset + UInt64(bytes.count)
        while index < segments.count {
            switch segments[index] {
            case let .literal(literal):
                pieces.append(literal[...])
                index += 1
            case let .representation(range):
                precondition(range.upperBound >= offset, "bytes \(offset)... skipped the planned range \(range)")
                let from = max(range.lowerBound, offset)
                guard from < end else { return pieces }
                let to = min(range.upperBound + 1, end)
                let base = bytes.startIndex
                pieces.append(bytes[(base + Int(from - offset))..<(base + Int(to - offset))])
                guard to == range.upperBound + 1 else { return pieces }
                index += 1
            }
        }
        return pieces
    }
}
