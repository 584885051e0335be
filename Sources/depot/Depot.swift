import ArgumentParser
import BlobStore
import Foundation
import Logging
import Synchronization

/// The `depot` command: a content-addressed image cache and proxy for OpenStack Glance.
@main
struct Depot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "depot",
        abstract: "A content-addressed image cache and proxy for OpenStack Glance.",
        version: DepotVersion.current,
        subcommands: [ServeCommand.self, StoreCommand.self, GlanceCommand.self, CacheCommand.self, PushesCommand.self, FsckCommand.self]
    )

    static func main() async {
        // Logs go to stderr: stdout carries command output (digests, blob bytes).
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = LogSettings.level.withLock { $0 }
            return handler
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// The level for loggers created from now on (commands set it before they create any).
enum LogSettings {
    static let level = Mutex<Logger.Level>(.warning)
}

enum DepotVersion {
    static let current = "0.1.0"
}

/// The data directory option every local command shares.
struct DataDirectoryOption: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: ArgumentHelp("Depot's data directory (blobs/, tmp/, catalog).", valueName: "DIR"))
    var path: String = DataDirectoryOption.defaultPath

    static var defaultPath: String {
        if let value = ProcessInfo.processInfo.environment["DEPOT_DATA_DIR"], !value.isEmpty {
            return value
        }
        return "depot-data"
    }
}

/// Takes the data directory's lock (see `DataDirectoryLock`) or fails with a message naming
/// the process that holds it. A reader of a directory that does not exist gets no lock (nil):
/// no server runs there, and the command says what is missing.
func lockDataDirectory(_ path: String, _ mode: DataDirectoryLock.Mode) throws -> DataDirectoryLock? {
    if mode == .shared && !FileManager.default.fileExists(atPath: path) { return nil }
    do { return try DataDirectoryLock(directory: path, mode: mode) } catch { throw CLIError(error.description) }
}
