import BlobStore

/// Least-recent-use order over blobs, accounted in bytes.
///
/// Every operation is O(1) except choosing victims, which walks from the least recently used
/// end and skips blobs that must stay (pinned, open, being filled, waiting to be pushed).
/// Nodes live in one array linked by index, so a million blobs cost a few dozen bytes each and
/// no per-node allocation.
public struct LRUIndex: Sendable {
    struct Node: Sendable {
        var digest: Digest
        var size: UInt64
        var previous: Int32
        var next: Int32
    }

    private var nodes: [Node] = []
    private var slots: [Digest: Int32] = [:]
    private var free: [Int32] = []
    /// Least recently used.
    private var head: Int32 = -1
    /// Most recently used.
    private var tail: Int32 = -1

    /// Bytes of all blobs in the index.
    public private(set) var totalBytes: UInt64 = 0

    public init() {}

    public var count: Int { slots.count }

    public func contains(_ digest: Digest) -> Bool { slots[digest] != nil }

    public func size(of digest: Digest) -> UInt64? { slots[digest].map { nodes[Int($0)].size } }

    /// Marks a blob of exactly `size` bytes as used now, in one lookup; false (and nothing
    /// changes) when the index does not have it or has it with another size.
    public mutating func touch(_ digest: Digest, ifSize size: UInt64) -> Bool {
        guard let slot = slots[digest], nodes[Int(slot)].size == size else { return false }
        unlink(slot)
        append(slot)
        return true
    }

    /// Adds a blob as the most recently used, or marks an existing one as used now.
    public mutating func touch(_ digest: Digest, size: UInt64) {
        if let slot = slots[digest] {
            totalBytes = totalBytes - nodes[Int(slot)].size + size
            nodes[Int(slot)].size = size
            unlink(slot)
            append(slot)
            return
        }
        let node = Node(digest: digest, size: size, previous: -1, next: -1)
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            nodes[Int(slot)] = node
        } else {
            slot = Int32(nodes.count)
            nodes.append(node)
        }
        slots[digest] = slot
        totalBytes += size
        append(slot)
    }

    /// Marks a known blob as used now; false when it is not in the index.
    @discardableResult
    public mutating func touch(_ digest: Digest) -> Bool {
        guard let slot = slots[digest] else { return false }
        unlink(slot)
        append(slot)
        return true
    }

    /// Drops a blob from the index.
    @discardableResult
    public mutating func remove(_ digest: Digest) -> UInt64? {
        guard let slot = slots.removeValue(forKey: digest) else { return nil }
        unlink(slot)
        let size = nodes[Int(slot)].size
        totalBytes -= size
        free.append(slot)
        return size
    }

    /// The blobs to evict, least recently used first, until `bytes` would be freed; blobs for
    /// which `mustKeep` is true are skipped. Returns fewer when not enough can go.
    public func victims(toFree bytes: UInt64, mustKeep: (Digest) -> Bool = { _ in false }) -> [(digest: Digest, size: UInt64)] {
        var chosen: [(Digest, UInt64)] = []
        var freed: UInt64 = 0
        var slot = head
        while slot >= 0, freed < bytes {
            let node = nodes[Int(slot)]
            if !mustKeep(node.digest) {
                chosen.append((node.digest, node.size))
                freed += node.size
            }
            slot = node.next
        }
        return chosen
    }

    /// Digests from least to most recently used.
    public var order: [Digest] {
        var result: [Digest] = []
        result.reserveCapacity(slots.count)
        var slot = head
        while slot >= 0 {
            result.append(nodes[Int(slot)].digest)
            slot = nodes[Int(slot)].next
        }
        return result
    }

    private mutating func unlink(_ slot: Int32) {
        let node = nodes[Int(slot)]
        if node.previous >= 0 { nodes[Int(node.previous)].next = node.next } else { head = node.next }
        if node.next >= 0 { nodes[Int(node.next)].previous = node.previous } else { tail = node.previous }
        nodes[Int(slot)].previous = -1
        nodes[Int(slot)].next = -1
    }

    private mutating func append(_ slot: Int32) {
        nodes[Int(slot)].previous = tail
        nodes[Int(slot)].next = -1
        if tail >= 0 { nodes[Int(tail)].next = slot } else { head = slot }
        tail = slot
    }
}
