import Foundation

/// What a data directory's blobs and fills hold on disk, counted from the files themselves.
public struct DataDirectoryUsage: Sendable {
    /// Sum of `st_size` over `blobs/` and `tmp/`, each inode once: the bytes the cache budget
    /// is written in (a fill or an upload reserves its image's size, and its temporary file is
    /// `posix_fallocate`d to that size at once).
    public var bytes: UInt64 = 0
    /// Sum of `st_blocks` × 512 over the same inodes: what the filesystem allocated, rounding
    /// each file up to its blocks (the budget does not promise this; `min_free_disk` guards the
    /// filesystem).
    public var allocated: UInt64 = 0
    public var files = 0
}

/// Counts `blobs/` and `tmp/` under `dataDirectory` as `benchmarks/soak.py` does: `tmp/` first,
/// each inode once. A commit links the temporary file into `blobs/` before unlinking it (one
/// inode, two names), and an eviction deletes a blob before the fill that needed the room
/// creates its temporary file; walked in this order neither is counted twice.
public func dataDirectoryUsage(_ dataDirectory: String) -> DataDirectoryUsage {
    var usage = DataDirectoryUsage()
    var seen = Set<[UInt64]>()
    for sub in ["tmp", "blobs"] {
        guard let walker = FileManager.default.enumerator(atPath: dataDirectory + "/" + sub) else { continue }
        while let name = walker.nextObject() as? String {
            var info = stat()
            // Gone since the listing (committed, evicted): counted where it is now, or not at all.
            guard lstat(dataDirectory + "/" + sub + "/" + name, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            guard seen.insert([UInt64(info.st_dev), UInt64(info.st_ino)]).inserted else { continue }
            usage.bytes += UInt64(info.st_size)
            usage.allocated += UInt64(info.st_blocks) * 512
            usage.files += 1
        }
    }
    return usage
}

/// Samples `dataDirectoryUsage` on a thread of its own (the cooperative pool may be busy with
/// clients) until `stop` is called, keeping the peak.
public final class DiskUsageSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = DataDirectoryUsage()
    private var count = 0
    private var running = true
    private let finished = DispatchSemaphore(value: 0)

    /// Starts sampling every `interval` seconds.
    public init(_ dataDirectory: String, interval: Double = 0.005) {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                let now = dataDirectoryUsage(dataDirectory)
                lock.withLock {
                    if now.bytes > peak.bytes { peak.bytes = now.bytes }
                    if now.allocated > peak.allocated { peak.allocated = now.allocated }
                    count += 1
                }
                Thread.sleep(forTimeInterval: interval)
            }
            finished.signal()
        }
    }

    /// Stops sampling; returns the peaks and the number of samples.
    public func stop() async -> (peak: DataDirectoryUsage, samples: Int) {
        lock.withLock { running = false }
        _ = try? await offThePool { [finished] in finished.wait() }
        return lock.withLock { (peak, count) }
    }
}
