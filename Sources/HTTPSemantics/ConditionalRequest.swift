/// Conditional request checks against a representation's entity tag (RFC 9110 section 13.1).
public enum ConditionalRequest {
    /// Whether `If-None-Match` matches (RFC 9110 section 13.1.2): `*` matches any current
    /// representation; a listed tag matches by weak comparison. Without an entity tag only `*`
    /// can match.
    public static func noneMatchMatches(_ header: String?, etag: String?) -> Bool {
        guard let header else { return false }
        return header.split(separator: ",").contains { candidate in
            let tag = candidate.trimmingCharacters(in: " \t")
            guard tag != "*" else { return true }
            guard let etag else { return false }
            return tag == etag || tag == "W/" + etag
        }
    }

    /// Whether `If-Match` matches (RFC 9110 section 13.1.1): `*` matches any current
    /// representation; a listed tag matches by strong comparison only (a weak tag never
    /// does). Without an entity tag only `*` can match.
    public static func matchMatches(_ header: String, etag: String?) -> Bool {
        header.split(separator: ",").contains { candidate in
            let tag = candidate.trimmingCharacters(in: " \t")
            guard tag != "*" else { return true }
            guard let etag, !etag.hasPrefix("W/") else { return false }
            return tag == etag
        }
    }

    /// Whether a `Range` should be honoured given `If-Range` (RFC 9110 section 13.1.5): an
    /// entity tag must match by strong comparison; a date could only match a `Last-Modified`,
    /// which Depot never sends, so it falls back to the whole representation, as does an
    /// invalid field or a representation without an entity tag.
    public static func ifRangeAllowsRange(_ header: String?, etag: String?) -> Bool {
        guard let header else { return true }
        guard let etag else { return false }
        return header.trimmingCharacters(in: " \t") == etag
    }
}

