import Foundation

/// A throwaway certificate authority with a server certificate for 127.0.0.1 and a client
/// certificate, made with the `openssl` command in a temporary directory.
public final class TestCertificates: Sendable {
    let directory: TemporaryDirectory
    /// The CA's certificate (PEM): what clients trust.
    public var authority: String { directory.path + "/ca.pem" }
    /// A certificate for IP 127.0.0.1 and localhost, signed by the CA, and its key.
    public var serverCertificate: String { directory.path + "/server.pem" }
    public var serverKey: String { directory.path + "/server.key" }
    /// A client certificate signed by the CA, and its key.
    public var clientCertificate: String { directory.path + "/client.pem" }
    public var clientKey: String { directory.path + "/client.key" }
    /// A second, unrelated CA (certificate only): trusting it must not verify the server.
    public var otherAuthority: String { directory.path + "/other-ca.pem" }

    public init() async throws {
        directory = TemporaryDirectory("depot-certs")
        let dir = directory.path
        func openssl(_ arguments: [String]) async throws {
            let result = try await spawn("/usr/bin/openssl", arguments, stderrPath: dir + "/openssl.log")
            guard result.status == 0 else { throw CommandFailed(command: "openssl " + arguments.joined(separator: " "), status: result.status) }
        }
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: dir + "/server.ext", atomically: true, encoding: .utf8)
        try "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n".write(toFile: dir + "/client.ext", atomically: true, encoding: .utf8)
        for ca in ["ca", "other-ca"] {
            try await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(ca).key", "-out", "\(dir)/\(ca).pem",
                         "-days", "2", "-subj", "/CN=Depot test \(ca)"])
        }
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=depot")] {
            try await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).csr", "-subj", subject])
            try await openssl(["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key", "-CAcreateserial",
                         "-out", "\(dir)/\(name).pem", "-days", "2", "-extfile", "\(dir)/\(name).ext"])
        }
    }
}
