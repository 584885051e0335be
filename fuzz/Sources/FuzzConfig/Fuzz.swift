/// Input: a config file's text.
///
/// Beyond not crashing or hanging (libFuzzer's -timeout, and the alias cap against billion
/// laughs): an error names a line that exists in the text, counted as libyaml counts lines.
func fuzzConfig(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    let lines = text.split(omittingEmptySubsequences: false, whereSeparator: YAMLError.isLineBreak).count
    do {
        _ = try DepotConfiguration.parse(text, path: "fuzz.yaml")
    } catch {
        if let line = error.line { require((1...lines).contains(line), "line \(line) of \(lines): \(error)") }
    }
    return 0
}

/// `precondition` keeps its message in release builds only as a bare trap: this prints it.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}
