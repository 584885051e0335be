import Foundation
import Synchronization

/// A real Keystone 30 with a real Glance 33 behind it (keystonemiddleware), started with
/// `scripts/keystone-dev`, and the identities it created.
public final class KeystoneServer: Sendable {
    public struct User: Sendable, Decodable {
        public let username: String
        public let password: String
        public let project_name: String
        public let user_domain_name: String
        public let project_domain_name: String
    }

    public struct ApplicationCredential: Sendable, Decodable {
        public let id: String
        public let secret: String
    }

    struct Credentials: Decodable {
        let auth_url: String
        let glance_url: String
        let region: String
        let users: [String: User]
        let depot_application_credential: ApplicationCredential
    }

    public let dataDirectory: String
    /// Keystone's v3 URL.
    public let authURL: String
    public let glanceURL: String
    public let region: String
    public let users: [String: User]
    public let depotApplicationCredential: ApplicationCredential

    private static let script = repositoryRoot + "/scripts/keystone-dev"
    /// The start, under way or done: every caller awaits the same one.
    private static let sharedStart = Mutex<Task<KeystoneServer, any Error>?>(nil)
    /// The pair once started, stopped at exit.
    private static let started = Mutex<KeystoneServer?>(nil)

    /// One Keystone+Glance pair for the test process, stopped at exit.
    public static func shared() async throws -> KeystoneServer {
        let start = sharedStart.withLock { start in
            if let start { return start }
            let task = Task {
                let server = try await KeystoneServer.start()
                KeystoneServer.started.withLock { $0 = server }
                atexit { KeystoneServer.started.withLock { $0?.stop() } }
                return server
            }
            start = task
            return task
        }
        return try await start.value
    }

    private static func start() async throws -> KeystoneServer {
        try await run("/bin/bash", [repositoryRoot + "/scripts/glance-dev", "install"])
        try await run("/bin/bash", [script, "install"])
        let dir = NSTemporaryDirectory() + "depot-keystone-\(UUID().uuidString)"
        try await run("/bin/bash", [script, "start", "--data", dir])
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/credentials.json"))
        let credentials = try JSONDecoder().decode(Credentials.self, from: data)
        return KeystoneServer(directory: dir, credentials: credentials)
    }

    init(directory: String, credentials: Credentials) {
        dataDirectory = directory
        authURL = credentials.auth_url
        glanceURL = credentials.glance_url
        region = credentials.region
        users = credentials.users
        depotApplicationCredential = credentials.depot_application_credential
    }

    public func stop() {
        for name in ["keystone", "glance-api"] {
            if let text = try? String(contentsOfFile: "\(dataDirectory)/\(name).pid", encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 {
                kill(-pid, SIGKILL)
            }
        }
        // Killing both groups is the whole stop (see GlanceServer.stop): it runs at exit, where
        // no child process can be awaited.
        if ProcessInfo.processInfo.environment["DEPOT_TEST_KEEP_GLANCE"] != "1" {
            try? FileManager.default.removeItem(atPath: dataDirectory)
        }
    }
}
