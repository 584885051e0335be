import Glibc

/// Thin, typed-error wrappers over the system calls the store needs.
///
/// Every call retries on EINTR and turns failures into `BlobStoreError` with the path.
enum POSIX {
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(BlobStoreError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw .fromErrno("open", path: path)
        }
    }

    /// Writes the whole buffer at the current offset.
    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws(BlobStoreError) {
        var done = 0
        while done < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw .fromErrno("write", path: path)
            }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`; returns the count read (0 at end of file).
    static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: UInt64, path: String) throws(BlobStoreError) -> Int {
        while true {
            let n = Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw .fromErrno("pread", path: path)
        }
    }

    /// Reads up to `buffer.count` bytes at the current offset.
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, path: String) throws(BlobStoreError) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw .fromErrno("read", path: path)
        }
    }

    static func fsync(_ fd: Int32, path: String) throws(BlobStoreError) {
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw .fromErrno("fsync", path: path)
        }
    }

    /// Makes a directory entry change (create, rename, unlink) durable.
    static func fsyncDirectory(_ path: String) throws(BlobStoreError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { Glibc.close(fd) }
        try fsync(fd, path: path)
    }

    /// Creates a directory if it is missing; returns true when it was created.
    @discardableResult
    static func mkdir(_ path: String, mode: mode_t = 0o755) throws(BlobStoreError) -> Bool {
        if Glibc.mkdir(path, mode) == 0 { return true }
        if errno == EEXIST { return false }
        throw .fromErrno("mkdir", path: path)
    }

    static func unlink(_ path: String) throws(BlobStoreError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT {
            throw .fromErrno("unlink", path: path)
        }
    }

    static func rename(_ from: String, _ to: String) throws(BlobStoreError) {
        if Glibc.rename(from, to) != 0 {
            throw .fromErrno("rename to \(to)", path: from)
        }
    }

    /// Hard-links `from` as `to`; returns false when `to` already exists.
    static func linkIfAbsent(_ from: String, _ to: String) throws(BlobStoreError) -> Bool {
        if Glibc.link(from, to) == 0 { return true }
        if errno == EEXIST { return false }
        throw .fromErrno("link to \(to)", path: from)
    }

    /// The file's size, or nil when it does not exist.
    static func fileSize(_ path: String) throws(BlobStoreError) -> UInt64? {
        var st = stat()
        if stat(path, &st) != 0 {
            if errno == ENOENT { return nil }
            throw .fromErrno("stat", path: path)
        }
        return UInt64(st.st_size)
    }

    static func fileSize(fd: Int32, path: String) throws(BlobStoreError) -> UInt64 {
        var st = stat()
        if Glibc.fstat(fd, &st) != 0 { throw .fromErrno("fstat", path: path) }
        return UInt64(st.st_size)
    }

    /// Names in a directory (without "." and ".."), or [] when it does not exist.
    static func listDirectory(_ path: String) throws(BlobStoreError) -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw .fromErrno("opendir", path: path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
