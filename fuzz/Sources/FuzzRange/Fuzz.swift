/// Input: 8 bytes of body size (little-endian, reduced below 2^40 so that suffix and
/// open ranges reach real sizes), then the Range header's text.
///
/// Beyond not crashing: every range served lies inside the body, ranges come sorted and
/// coalesced (neither overlapping nor touching), there are at most `maximumParts`, and an
/// empty body never gets a range.
func fuzzRange(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: count)
    guard bytes.count >= 8 else { return 0 }
    var size: UInt64 = 0
    for (shift, byte) in bytes.prefix(8).enumerated() { size |= UInt64(byte) << (8 * UInt64(shift)) }
    size %= 1 << 40
    let header = String(decoding: bytes.dropFirst(8), as: UTF8.self)
    switch RangeRequest.parse(header, size: size) {
    case .whole, .unsatisfiable:
        break
    case let .ranges(ranges):
        require(!ranges.isEmpty && ranges.count <= RangeRequest.maximumParts, "\(ranges.count) ranges for \(header.debugDescription)")
        require(size > 0, "a range of an empty body for \(header.debugDescription)")
        for range in ranges { require(range.upperBound < size, "\(range) outside \(size) bytes for \(header.debugDescription)") }
        for (a, b) in zip(ranges, ranges.dropFirst()) {
            require(a.upperBound + 1 < b.lowerBound, "\(a) and \(b) not sorted and coalesced for \(header.debugDescription)")
        }
    }
    return 0
}

/// `precondition` keeps its message in release builds only as a bare trap: this prints it.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}
