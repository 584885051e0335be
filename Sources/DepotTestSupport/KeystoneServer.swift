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
    private static let sharedServer = Mutex<KeystoneServer?>(nil)

    /// One Keystone+Glance pair for the test process, stopped at exit.
    public static func shared() async throws -> KeystoneServer {
        try await offThePool { try sharedBlocking() }
    }

    private static func sharedBlocking() throws -> KeystoneServer {
        try sharedServer.withLock { server in
            if let server { return server }
            try run("/bin/bash", [repositoryRoot + "/scripts/glance-dev", "install"])
            try run("/bin/bash", [script, "install"])
            let dir = NSTemporaryDirectory() + "depot-keystone-\(UUID().uuidString)"
            try run("/bin/bash", [script, "start", "--data", dir])
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/credentials.json"))
            let credentials = try JSONDecoder().decode(Credentials.self, from: data)
            let started = KeystoneServer(directory: dir, credentials: credentials)
            server = started
            atexit { KeystoneServer.sharedServer.withLock { $0?.stop() } }
            return started
        }
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
        _ = try? run("/bin/bash", [Self.script, "stop", "--data", dataDirectory])
        if ProcessInfo.processInfo.environment["DEPOT_TEST_KEEP_GLANCE"] != "1" {
            try? FileManager.default.removeItem(atPath: dataDirectory)
        }
    }
}
