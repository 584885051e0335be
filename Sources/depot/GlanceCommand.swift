import ArgumentParser
import Foundation
import Glance

/// `depot glance …`: talk to a backend Glance directly, with the client Depot itself uses.
struct GlanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "glance",
        abstract: "Talk to a backend Glance with Depot's own client (connectivity checks, benchmarks).",
        subcommands: [Show.self, Download.self]
    )

    struct Connection: ParsableArguments {
        @Option(name: .customLong("glance-url"), help: "Glance's image endpoint, without /v2 (or $OS_IMAGE_URL).")
        var glanceURL: String?

        @Option(help: "X-Auth-Token to send (or $OS_AUTH_TOKEN).")
        var token: String?

        func client() throws -> GlanceClient {
            let env = ProcessInfo.processInfo.environment
            guard let url = glanceURL ?? env["OS_IMAGE_URL"] else {
                throw ValidationError("give --glance-url URL (or set OS_IMAGE_URL), e.g. http://127.0.0.1:9292")
            }
            let token = token ?? env["OS_AUTH_TOKEN"]
            return GlanceClient(configuration: GlanceClientConfiguration(endpoint: url, credentials: token.map { .token($0) } ?? .none))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an image's Glance record as JSON.")

        @OptionGroup var connection: Connection
        @Argument(help: "The image id.") var imageID: String

        func run() async throws {
            let image = try await connection.client().showImage(imageID)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(image), as: UTF8.self))
        }
    }

    struct Download: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Download an image's data (resuming after resets).")

        @OptionGroup var connection: Connection
        @Argument(help: "The image id.") var imageID: String

        @Option(name: [.customShort("o"), .customLong("output")], help: "Write here instead of stdout.")
        var output: String?

        @Option(help: "Only bytes START-END (inclusive).")
        var range: String?

        func run() async throws {
            let selected = try range.map(parseInclusiveRange)
            let fd: Int32 = output.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } ?? STDOUT_FILENO
            guard fd >= 0 else { throw CLIError("cannot open \(output!): \(String(cString: strerror(errno)))") }
            defer { if fd != STDOUT_FILENO { close(fd) } }
            let started = ContinuousClock.now
            let received = ByteCounter()
            let head = try await connection.client().download(imageID: imageID, range: selected) { buffer in
                var done = 0
                while done < buffer.count {
                    let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw CLIError("write failed: \(String(cString: strerror(errno)))")
                    }
                    done += n
                }
                received.add(buffer.count)
            }
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            printError("HTTP \(head.status): \(received.value) bytes in \(String(format: "%.3f", seconds)) s (\(String(format: "%.0f", Double(received.value) / seconds / 1e6)) MB/s)")
        }
    }
}

/// A byte count updated from a transfer thread.
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add(_ n: Int) { lock.withLock { count += n } }
}
