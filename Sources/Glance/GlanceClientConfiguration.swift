/// How Depot reaches one backend Glance and authenticates its own calls.
public struct GlanceClientConfiguration: Sendable {
    /// The image endpoint without `/v2`, e.g. `http://127.0.0.1:9292`. With Keystone
    /// credentials it may be nil: the endpoint then comes from the service catalog.
    public var endpoint: String?
    /// Depot's own credentials for background work (fills, pushes).
    public var credentials: ServiceCredentials
    public var connectTimeout: Duration = .seconds(5)
    /// Limit for metadata calls (not for streaming transfers).
    public var requestTimeout: Duration = .seconds(60)
    /// A transfer moving fewer than `minimumSpeed` bytes/s for this long is aborted (and
    /// resumed, when retries remain). Time the consumer spends not reading does not count.
    public var stallTimeout: Duration = .seconds(30)
    public var minimumSpeed = 1024
    /// Retries of idempotent requests (and download resumes) after transient failures.
    public var maxRetries = 6
    public var retryBaseDelay: Duration = .milliseconds(100)
    public var retryMaxDelay: Duration = .seconds(5)
    /// Bytes buffered between a download and a slow consumer.
    public var downloadBufferBytes = 2 << 20
    public var tls = TLSOptions()

    public init(endpoint: String?, credentials: ServiceCredentials) {
        self.endpoint = endpoint.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.credentials = credentials
    }
}

/// Depot's own identity towards the backend.
public enum ServiceCredentials: Sendable {
    /// No token (a Glance without auth).
    case none
    /// A static token sent as `X-Auth-Token`.
    case token(String)
    /// Keystone v3: Depot authenticates, caches the token, and re-authenticates on 401.
    case keystone(KeystoneCredentials)
}

/// Whose token a request carries.
public enum RequestAuth: Sendable, Equatable {
    /// Depot's service credentials.
    case service
    /// The caller's own `X-Auth-Token`, passed through unchanged.
    case token(String)
}

/// Keystone v3 credentials for Depot's service identity.
public struct KeystoneCredentials: Sendable, Equatable {
    public enum Method: Sendable, Equatable {
        case password(username: String, password: String, userDomain: String, project: String, projectDomain: String)
        case applicationCredential(id: String, secret: String)
    }

    /// Keystone's v3 URL, e.g. `http://127.0.0.1:5000/v3`.
    public var authURL: String
    public var method: Method
    /// Region of the image endpoint in the catalog; any region when nil.
    public var region: String?
    /// Catalog interface to use: public, internal or admin.
    public var interface: String

    public init(authURL: String, method: Method, region: String? = nil, interface: String = "public") {
        self.authURL = authURL.hasSuffix("/") ? String(authURL.dropLast()) : authURL
        self.method = method
        self.region = region
        self.interface = interface
    }
}
