import Glibc

/// One process owns a data directory: an `flock` on `DATA/depot.lock`.
///
/// `depot serve` and every command that writes (fsck, `store put`, `store verify`) take it
/// exclusively; commands that only read a stopped Depot's data (`store cat`, `store ls`,
/// `cache ls --data-dir`, `pushes ls --data-dir`) take it shared, so several may read at once
/// but none runs beside a server. The kernel drops the lock when its holder exits, however it
/// exits (`kill -9` included), so a stale lock file never blocks a restart. The exclusive
/// holder writes its pid into the file; refusals name the holders the kernel reports in
/// `/proc/locks`, or else that pid.
public final class DataDirectoryLock: Sendable {
    public enum Mode: Sendable {
        /// The server, and commands that change the data directory.
        case exclusive
        /// Commands that only read it; they exclude an exclusive holder, not each other.
        case shared
    }

    /// The lock file's name in the data directory.
    public static let fileName = "depot.lock"

    public let path: String
    private let fd: Int32

    /// Takes the lock without waiting.
    ///
    /// - Throws: `DataDirectoryLockError.held` naming the pids that hold it, or `.io` when the
    ///   directory or the lock file cannot be created.
    public init(directory: String, mode: Mode) throws(DataDirectoryLockError) {
        path = directory + "/" + Self.fileName
        // A reader does not create the directory it was asked to read, and needs no write
        // access to it (a read-only backup, say) once the lock file exists.
        if mode == .exclusive && mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw .io(operation: "mkdir", path: directory, errno: errno)
        }
        // O_NOFOLLOW: a symlink planted as the lock file must not make Depot truncate its target.
        let fd = open(path, (mode == .exclusive ? O_RDWR : O_RDONLY) | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        var result: Int32
        repeat { result = flock(fd, (mode == .exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let code = errno
            let holders = Self.holders(fd: fd)
            close(fd)
            if code == EWOULDBLOCK { throw .held(path: path, holders: holders) }
            throw .io(operation: "flock", path: path, errno: code)
        }
        self.fd = fd
        if mode == .exclusive {
            // For people and for kernels without /proc/locks: who holds it now.
            let text = "\(getpid())\n"
            _ = ftruncate(fd, 0)
            _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        }
    }

    deinit { close(fd) }

    /// The processes holding a lock on the file behind `fd`: from `/proc/locks` (matched by
    /// device and inode), else the pid the exclusive holder wrote.
    static func holders(fd: Int32) -> [LockHolder] {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return [] }
        // Linux's dev_t encoding; /proc/locks prints "MAJOR:MINOR:INODE", the first two in hex.
        let dev = UInt64(info.st_dev)
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff), minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
        func hex(_ value: UInt64) -> String {
            let text = String(value, radix: 16)
            return text.count < 2 ? "0" + text : text
        }
        let device = "\(hex(major)):\(hex(minor)):\(UInt64(info.st_ino))"
        var found: [LockHolder] = []
        if let table = readSmallFile("/proc/locks") {
            // "1: FLOCK  ADVISORY  WRITE 26973 fe:00:5376249 0 EOF"
            for line in table.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 6, fields[1] == "FLOCK", fields[5] == device, let pid = Int32(fields[4]) else { continue }
                found.append(LockHolder(pid: pid, exclusive: fields[3] == "WRITE", command: command(of: pid)))
            }
        }
        if found.isEmpty, let text = readFile(fd: fd), let pid = Int32(text.split(separator: "\n").first ?? "") {
            found.append(LockHolder(pid: pid, exclusive: true, command: command(of: pid)))
        }
        return found
    }

    /// A process's program and first argument, e.g. "depot serve", if they can be read. Not
    /// the whole command line: it may carry a token (--admin-token, --service-token).
    static func command(of pid: Int32) -> String? {
        guard let text = readSmallFile("/proc/\(pid)/cmdline"), !text.isEmpty else { return nil }
        let words = text.split(separator: "\0").map(String.init)
        guard let first = words.first else { return nil }
        let name = first.split(separator: "/").last.map(String.init) ?? first
        return ([name] + words.dropFirst().prefix(1)).joined(separator: " ")
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return readFile(fd: fd)
    }

    static func readFile(fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var offset: off_t = 0
        while bytes.count < 4 << 20 {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += buffer[..<n]
            offset += off_t(n)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A process that holds a data directory's lock.
public struct LockHolder: Sendable, Equatable, CustomStringConvertible {
    public let pid: Int32
    public let exclusive: Bool
    /// Its command line, when it could be read.
    public let command: String?

    public var description: String { "pid \(pid)" + (command.map { " (\($0.prefix(80)))" } ?? "") }
}

/// Why a data directory's lock could not be taken; the text says what to do.
public enum DataDirectoryLockError: Error, CustomStringConvertible, Equatable {
    /// Another process holds the lock.
    case held(path: String, holders: [LockHolder])
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .held(path, holders):
            let directory = String(path.dropLast(DataDirectoryLock.fileName.count + 1))
            let who = holders.isEmpty ? "another process" : holders.map(\.description).joined(separator: ", ")
            if holders.contains(where: \.exclusive) {
                return "the data directory \(directory) is in use by \(who), which holds \(path); "
                    + "stop that process first (or ask the running server through its API with --url), or choose another --data-dir"
            }
            return "the data directory \(directory) is being read by \(who), which holds \(path) shared; "
                + "retry when that command ends, or choose another --data-dir"
        case let .io(operation, path, code):
            return "cannot lock the data directory: \(operation) \(path): \(String(cString: strerror(code))); check the path and its permissions"
        }
    }
}
