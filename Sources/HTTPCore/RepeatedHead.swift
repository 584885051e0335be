import Glibc
import NIOHTTP1

/// The head of the request `WireFastPath` answered last on a connection, kept to recognise the
/// next request when it is the same one again but for the value of its first `Range` field:
/// what a client streaming an image sends (qemu's curl driver, wrk, a segmented download).
/// Such a request is answered from what the responder kept (`FastPathResponder.repeatedResponse`)
/// without reading its head into strings, routing it or deciding again.
///
/// A match is a head `WireRequestHead.read` reads the same way as the kept one, but for that
/// value: every other byte is equal, and the value is one its scan accepts as it stands (bytes
/// of a field value, without whitespace at either end: leading whitespace would be taken off,
/// trailing whitespace makes the head the codec's). So its method, target, version and every
/// other field are the kept head's.
struct RepeatedHead {
    /// The kept head's bytes, its final empty line included.
    let bytes: [UInt8]
    /// Where the value of its first `Range` field is among `bytes` (nil: no such field).
    let range: Range<Int>?
    let method: HTTPMethod
    /// The responder's (`ImmediateResponse.repeatable`).
    let earlier: AnyObject

    /// The head at the start of `buffer` when it matches: its length in bytes, and where its
    /// first `Range` field's value is; nil otherwise, or when it is not complete yet.
    func match(_ buffer: UnsafeRawBufferPointer) -> (length: Int, range: Range<Int>?)? {
        guard let base = buffer.baseAddress else { return nil }
        return bytes.withUnsafeBytes { kept in
            guard let range else {
                guard buffer.count >= kept.count, memcmp(base, kept.baseAddress!, kept.count) == 0 else { return nil }
                return (kept.count, nil)
            }
            let start = range.lowerBound
            // From the CRLF that ends the value to the end of the head.
            let rest = kept.count - range.upperBound
            guard buffer.count >= start + rest, memcmp(base, kept.baseAddress!, start) == 0 else { return nil }
            let limit = min(buffer.count - rest, WireRequestHead.maximumLength - rest)
            var end = start
            while end < limit, WireRequestHead.isFieldValueByte(buffer[end]) { end += 1 }
            // The scan would take leading whitespace off the value, and leaves a field with
            // trailing whitespace to the codec.
            if end > start {
                guard !WireRequestHead.isWhitespace(buffer[start]), !WireRequestHead.isWhitespace(buffer[end - 1]) else { return nil }
            }
            guard memcmp(base + end, kept.baseAddress! + range.upperBound, rest) == 0 else { return nil }
            return (end + rest, start..<end)
        }
    }
}
