/// Input: one byte of chunk seed, then a multipart body with the boundary `fuzz`.
///
/// Beyond not crashing: the parser is streaming, so the events (part starts and ends, the
/// data bytes, the closing delimiter) and the verdict must not depend on how the body is cut
/// into chunks; the bytes handed out as part data never exceed
/// the input; parts start and end in pairs.
func fuzzMultipart(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: count))
    guard let seed = bytes.first else { return 0 }
    let body = Array(bytes.dropFirst())
    let whole = run(body, chunks: [body.count])
    // Chunk sizes from the seed: 1 byte at a time, or a small repeating pattern.
    let pattern = seed == 0 ? [1] : [Int(seed % 7) + 1, Int(seed / 7 % 13) + 1, Int(seed / 91) + 1]
    var sizes: [Int] = []
    var covered = 0
    while covered < body.count {
        sizes.append(pattern[sizes.count % pattern.count])
        covered += sizes.last!
    }
    let chunked = run(body, chunks: sizes)
    // A feed that throws returns none of the events it found before the mistake, so after an
    // error only the verdict is compared.
    let same = whole.error != nil || chunked.error != nil ? whole.error == chunked.error : whole == chunked
    if !same { fatalError("events differ when the body is cut in chunks \(pattern): \(whole) vs \(chunked)") }
    return 0
}

struct Outcome: Equatable, CustomStringConvertible {
    var starts = 0, ends = 0, dataBytes: [UInt8] = [], closed = false, error: String?
    var description: String { "\(starts) starts, \(ends) ends, \(dataBytes.count) data bytes, closed \(closed), error \(error ?? "none")" }
}

func run(_ body: [UInt8], chunks: [Int]) -> Outcome {
    var outcome = Outcome()
    do {
        var parser = try MultipartParser(boundary: "fuzz")
        var offset = 0
        for size in chunks where offset < body.count {
            let end = min(body.count, offset + size)
            for event in try parser.feed(body[offset..<end]) {
                switch event {
                case .partStart:
                    require(outcome.starts == outcome.ends, "a part starts inside a part")
                    outcome.starts += 1
                case let .partData(bytes): outcome.dataBytes += bytes
                case .partEnd: outcome.ends += 1
                case .end: outcome.closed = true
                }
            }
            offset = end
        }
        try parser.finish()
    } catch {
        outcome.error = error.message
    }
    require(outcome.dataBytes.count <= body.count, "more part data than input")
    require(outcome.error != nil || outcome.starts == outcome.ends, "a complete body with an unended part")
    return outcome
}

/// `precondition` keeps its message in release builds only as a bare trap: this prints it.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}
