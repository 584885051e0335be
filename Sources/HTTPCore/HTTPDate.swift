#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The `Date` field of the responses Depot writes itself: the current second as an
/// IMF-fixdate (RFC 9110 section 5.6.7, `Sun, 06 Nov 1994 08:49:37 GMT`), which an origin
/// server with a clock MUST send in its 2xx, 3xx and 4xx answers (section 6.6.1), as Glance
/// and nginx do. Formatted once a second and copied into each head, as nginx does.
public enum HTTPDate {
    /// Bytes of an IMF-fixdate.
    public static let count = 29

    private static let cache = Mutex<(second: time_t, bytes: [UInt8])>((-1, []))

    /// The value for the current second.
    public static func now() -> [UInt8] {
        let second = time(nil)
        return cache.withLock { cache in
            if cache.second != second { cache = (second, format(second)) }
            return cache.bytes
        }
    }

    /// The IMF-fixdate of `second` (seconds since the epoch, UTC).
    public static func format(_ second: time_t) -> [UInt8] {
        var time = second
        var parts = tm()
        gmtime_r(&time, &parts)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        func two(_ value: Int32) {
            bytes.append(UInt8(ascii: "0") + UInt8(value / 10 % 10))
            bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
        }
        bytes += days[Int(parts.tm_wday)].utf8
        bytes += ", ".utf8
        two(parts.tm_mday)
        bytes.append(UInt8(ascii: " "))
        bytes += months[Int(parts.tm_mon)].utf8
        bytes.append(UInt8(ascii: " "))
        let year = parts.tm_year + 1900
        two(year / 100)
        two(year % 100)
        bytes.append(UInt8(ascii: " "))
        two(parts.tm_hour)
        bytes.append(UInt8(ascii: ":"))
        two(parts.tm_min)
        bytes.append(UInt8(ascii: ":"))
        two(parts.tm_sec)
        bytes += " GMT".utf8
        return bytes
    }

    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
}
