import HTTPCore

extension Request {
    /// The request's `X-Auth-Token`, nil without one.
    ///
    /// A repeated field's values are joined with ",", as Glance's WSGI server (gunicorn's
    /// `create` in `gunicorn/http/wsgi.py`) joins a repeated header into one environ value:
    /// Depot then sees the one token Glance would, which no identity service issued, and the
    /// request is refused as Glance refuses it (401). Taking the first value alone answered
    /// such a request as its first token's user (a hit, a download, the admin API), where the
    /// same request to Glance fails.
    var authToken: String? {
        let values = headers["x-auth-token"]
        return values.isEmpty ? nil : values.joined(separator: ",")
    }
}
