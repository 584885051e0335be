import BlobStore
import Foundation

/// The operator's directory (`multicloud.export_dir`) into which the ONAP Multicloud route
/// `POST …/images/file/{id}` with `{"imagePath": …}` writes images, and nowhere else.
///
/// A caller's path is relative to the directory, or absolute and inside it. It is walked one
/// component at a time with `openat(…, O_DIRECTORY | O_NOFOLLOW)` from the directory itself,
/// so no `..`, symlink (even one pointing back inside), or race with a rename can lead out;
/// components that only look like names (percent-escapes, Unicode compatibility forms of `/`
/// or `.`, backslashes) are refused rather than guessed at. Directories are not created. The
/// file is written under a temporary name in its directory, fsynced and renamed into place.
public struct ExportDirectory: Sendable {
    /// The configured directory.
    public let path: String

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// A caller's path that Depot refuses, or a write that failed.
    public enum Failure: Error, CustomStringConvertible, Equatable {
        /// The path leads (or could be read as leading) outside the export directory.
        case outside(String)
        /// Inside, but not a directory Depot can write into.
        case unusable(String)
        case io(String)

        public var description: String {
            switch self {
            case let .outside(message), let .unusable(message), let .io(message): message
            }
        }
    }

    /// The components of `requested` below the export directory.
    ///
    /// - Throws: `.outside` for a path that is outside it, or that only a decoder would read
    ///   as inside.
    public func components(of requested: String) throws(Failure) -> [String] {
        let outside = { (why: String) in Failure.outside("imagePath \(requested.debugDescription) is outside the export directory \(path): \(why). Give a directory inside it, relative to it or absolute") }
        guard !requested.isEmpty else { throw outside("it is empty") }
        guard !requested.unicodeScalars.contains("\0") else { throw outside("it contains a NUL byte") }
        guard requested.utf8.count <= 4096 else { throw outside("it is longer than 4096 bytes") }
        guard !requested.contains("\\") else { throw outside("it contains a backslash; separate directories with /") }
        var parts = requested.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if requested.hasPrefix("/") {
            let bases = [path, URL(fileURLWithPath: path).resolvingSymlinksInPath().path].map {
                $0.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            }
            guard let base = bases.first(where: { parts.starts(with: $0) }) else { throw outside("an absolute path must start with \(path)") }
            parts.removeFirst(base.count)
        }
        var kept: [String] = []
        for part in parts where part != "." {
            if part == ".." { throw outside("it has a .. component") }
            let decoded = part.removingPercentEncoding ?? part
            let compatible = decoded.precomposedStringWithCompatibilityMapping
            for form in [decoded, compatible] where form == ".." || form == "." || form.contains("/") || form.contains("\\") || form.contains("\0") {
                throw outside("the component \(part.debugDescription) reads as \(form.debugDescription) once decoded")
            }
            kept.append(part)
        }
        return kept
    }

    /// The file name for an image: its name (when that is a plain file name) and its disk
    /// format as the extension, as ONAP's plugin named it; else the image id.
    public static func fileName(imageName: String?, imageID: String, diskFormat: String?) -> String {
        let format = diskFormat.flatMap { $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) } && !$0.isEmpty ? $0 : nil } ?? "raw"
        var base = imageID
        if let name = imageName, !name.isEmpty, !name.hasPrefix("."), name.utf8.count <= 200,
           !name.unicodeScalars.contains(where: { $0 == "/" || $0 == "\\" || $0 == "%" || $0.properties.generalCategory == .control }),
           name.precomposedStringWithCompatibilityMapping.allSatisfy({ $0 != "/" && $0 != "\\" }) {
            base = name
        }
        return "\(base).\(format)"
    }

    /// Writes `reader`'s bytes as `fileName` in the directory `requested` names.
    ///
    /// Blocking (it copies the whole image): call it off the cooperative pool.
    /// - Returns: the written file's path.
    public func write(_ reader: BlobReader, to requested: String, fileName: String) throws(Failure) -> String {
        let parts = try components(of: requested)
        var directory = open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC)
        guard directory >= 0 else { throw .io("cannot open the export directory \(path): \(String(cString: strerror(errno))); the operator must create it") }
        defer { close(directory) }
        var walked = path
        for part in parts {
            walked += "/" + part
            let next = openat(directory, part, O_DIRECTORY | O_NOFOLLOW | O_RDONLY | O_CLOEXEC)
            guard next >= 0 else {
                let code = errno
                var info = stat()
                if fstatat(directory, part, &info, AT_SYMLINK_NOFOLLOW) == 0 && (info.st_mode & S_IFMT) == S_IFLNK {
                    throw .outside("imagePath \(requested.debugDescription) goes through the symlink \(walked), which Depot does not follow: it could lead outside the export directory \(path). Give a real directory inside it")
                }
                if code == ENOENT { throw .unusable("there is no directory \(walked) inside the export directory; create it first (Depot does not create directories)") }
                if code == ENOTDIR { throw .unusable("\(walked) is not a directory; imagePath names the directory the image is written into") }
                throw .io("cannot open \(walked): \(String(cString: strerror(code)))")
            }
            close(directory)
            directory = next
        }
        let temporary = ".depot-export-\(UInt64.random(in: .min ... .max)).tmp"
        let output = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw .io("cannot create a file in \(walked): \(String(cString: strerror(errno)))") }
        var kept = false
        defer {
            close(output)
            if !kept { unlinkat(directory, temporary, 0) }
        }
        do {
            try reader.forEachChunk(chunkSize: 4 << 20) { (chunk) throws(BlobStoreError) in
                var done = 0
                while done < chunk.count {
                    let n = Glibc.write(output, chunk.baseAddress! + done, chunk.count - done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw .io(operation: "write", path: walked + "/" + fileName, errno: errno) }
                    done += n
                }
            }
        } catch {
            throw .io("cannot write \(walked)/\(fileName): \(error)")
        }
        guard fsync(output) == 0 else { throw .io("cannot sync \(walked)/\(fileName): \(String(cString: strerror(errno)))") }
        // renameat replaces a file or a symlink of that name itself, never what a link points to.
        guard renameat(directory, temporary, directory, fileName) == 0 else {
            let code = errno
            if code == EISDIR || code == ENOTEMPTY || code == EEXIST {
                throw .unusable("\(walked)/\(fileName) is a directory; remove it or export into another directory")
            }
            throw .io("cannot rename into \(walked)/\(fileName): \(String(cString: strerror(code)))")
        }
        kept = true
        _ = fsync(directory)
        return walked + "/" + fileName
    }
}
