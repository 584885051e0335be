import BlobStore
import Cache
import Eviction
import Testing

/// The disk budget's decisions without a disk: which blobs go, which stay, when a reservation
/// is refused, and holds that wait for an eviction to end.
struct BudgetStateMachineTests {
    static let mib: UInt64 = 1 << 20

    static func blob(_ n: Int) -> Digest { Digest.of(Array("blob \(n)".utf8), algorithm: .sha256) }

    /// A 10 MiB budget (high 9.5, low 8.5) holding blobs 0..<count of 2 MiB, 0 the oldest.
    static func machine(blobs count: Int, budget: UInt64 = 10 * mib, high: Double = 0.95, low: Double = 0.85) -> BudgetStateMachine<Int> {
        var machine = BudgetStateMachine<Int>(watermarks: Watermarks(budget: budget, high: high, low: low), minimumFreeBytes: nil)
        for n in 0..<count { machine.load(blob(n), size: 2 * mib) }
        return machine
    }

    func evicted(_ action: BudgetStateMachine<Int>.ReserveAction) -> [Digest]? {
        if case let .reserved(victims) = action { return victims.map(\.digest) }
        return nil
    }

    @Test func aReservationAcrossTheHighMarkEvictsTheLeastRecentlyUsedDownToTheLowOne() {
        var machine = Self.machine(blobs: 4)
        machine.touch(Self.blob(0))
        // 8 MiB used + 2 crosses 9.5: down to 8.5 means freeing 1.5, one blob; 1 is now oldest.
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: true, freeDiskBytes: nil, waiter: 0)) == [Self.blob(1)])
        #expect(machine.usedBytes == 6 * Self.mib && machine.reserved == 2 * Self.mib)
        let victim = EvictionVictim(digest: Self.blob(1), size: 2 * Self.mib)
        #expect(machine.evictionEnded(victim, removed: true).isEmpty)
        #expect(machine.evictions == 1 && machine.evictedBytes == 2 * Self.mib)
        machine.settle(reserved: 2 * Self.mib, committed: EvictionVictim(digest: Self.blob(9), size: 2 * Self.mib), fileExists: true)
        #expect(machine.usedBytes == 8 * Self.mib && machine.reserved == 0)
        #expect(machine.recencyOrder == [Self.blob(2), Self.blob(3), Self.blob(0), Self.blob(9)])
    }

    @Test func pinnedHeldAndReadBlobsAreNeverChosenAndARefusalChangesNothing() {
        var machine = Self.machine(blobs: 4)
        machine.setPinned(Self.blob(0), true)
        #expect(machine.hold(Self.blob(1), by: .push(ImageKey(cloud: "c", imageID: "i")), waiter: 1) == .held)
        machine.beginRead(Self.blob(2))
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [Self.blob(3)])
        let before = (machine.usedBytes, machine.reserved)
        guard case .refused(.budgetExhausted) = machine.reserve(4 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0) else {
            Issue.record("6 MiB kept + 2 reserved + 4 cannot fit in 10")
            return
        }
        #expect((machine.usedBytes, machine.reserved) == before)
        machine.endRead(Self.blob(2))
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [Self.blob(2)], "read no more")
    }

    /// Reads of one blob are counted: it stays unevictable until the last of them ends, and an
    /// end with no read (a second `endRead`) changes nothing.
    @Test func aBlobReadTwiceIsKeptUntilBothReadsEnd() {
        var machine = Self.machine(blobs: 2)
        machine.beginRead(Self.blob(0))
        let hit = machine.beginHit(Self.blob(0), size: 2 * Self.mib)
        #expect(hit)
        machine.touch(Self.blob(1))
        machine.endRead(Self.blob(0))
        #expect(evicted(machine.reserve(6 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [Self.blob(1)], "one read is left")
        _ = machine.evictionEnded(EvictionVictim(digest: Self.blob(1), size: 2 * Self.mib), removed: true)
        machine.endRead(Self.blob(0))
        machine.endRead(Self.blob(0))
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 1)) == [Self.blob(0)], "read no more")
    }

    /// The event loop's hit: the recorded size must match, and then the blob is the most
    /// recently used and read, so eviction skips it until the read ends.
    @Test func aHitOfTheRecordedSizeIsTouchedAndReadAndAnotherSizeChangesNothing() {
        var machine = Self.machine(blobs: 4)
        let otherSize = machine.beginHit(Self.blob(0), size: Self.mib)
        #expect(!otherSize, "the file is not the recorded 2 MiB")
        #expect(machine.recencyOrder == (0..<4).map(Self.blob), "nothing moved")
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [Self.blob(0)], "and nothing is read")

        machine = Self.machine(blobs: 4)
        let hit = machine.beginHit(Self.blob(0), size: 2 * Self.mib)
        #expect(hit)
        #expect(machine.recencyOrder == [1, 2, 3, 0].map(Self.blob))
        machine.touch(Self.blob(1))
        machine.touch(Self.blob(2))
        machine.touch(Self.blob(3))
        // Blob 0 is the oldest again, but it is being read.
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [Self.blob(1)])
        machine.endRead(Self.blob(0))
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 1)) == [Self.blob(0)], "read no more")
    }

    @Test func runningFillsShareHalfTheBudgetAndUploadsAreNeverRefusedForIt() {
        var machine = Self.machine(blobs: 0)
        #expect(evicted(machine.reserve(4 * Self.mib, isFill: true, freeDiskBytes: nil, waiter: 0)) == [], "one fill alone may take more than half")
        guard case .refused(.budgetExhausted) = machine.reserve(2 * Self.mib, isFill: true, freeDiskBytes: nil, waiter: 0) else {
            Issue.record("a second fill beyond half the budget is refused")
            return
        }
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) == [])
        #expect(machine.reserved == 6 * Self.mib)
    }

    @Test func aReservationThatFitsOnlyOnceARemovalEndsWaitsForIt() throws {
        // No watermark margin: the budget alone decides.
        var machine = Self.machine(blobs: 4, budget: 10 * Self.mib, high: 1, low: 1)
        let victim = try machine.evictNow(Self.blob(0))
        #expect(machine.usedBytes == 6 * Self.mib && machine.evictingBytes == 2 * Self.mib)
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 1)) == [], "fits beside the file")
        guard case .wait = machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 2) else {
            Issue.record("the evicted file still takes the room this reservation needs")
            return
        }
        #expect(machine.reserved == 2 * Self.mib, "a waiting reservation takes nothing")
        #expect(machine.evictionEnded(victim, removed: true) == [2])
        #expect(machine.evictingBytes == 0)
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 2)) == [])
        #expect(machine.usedBytes + machine.reserved == 10 * Self.mib)
    }

    @Test func aHoldOnABlobBeingEvictedWaitsAndIsTakenWhenTheEvictionEnds() throws {
        var machine = Self.machine(blobs: 5)
        let push = BlobHolder.push(ImageKey(cloud: "c", imageID: "i"))
        let victims = machine.prune(everything: false)
        #expect(victims.map(\.digest) == [Self.blob(0)], "10 used, down to 8.5")
        #expect(machine.hold(Self.blob(0), by: push, waiter: 7) == .wait)
        #expect(machine.hold(Self.blob(0), by: .upload("req"), waiter: 8) == .wait)
        #expect(machine.evictionEnded(victims[0], removed: true) == [7, 8])
        // Both now hold it: the file is gone, which the holders check; an upload re-publishing
        // it keeps it from here on.
        #expect(throws: EvictionRefusal.self) { _ = try machine.evictNow(Self.blob(0)) }
        #expect(machine.hold(Self.blob(0), by: push, waiter: 9) == .held)
    }

    @Test func aBlobDeduplicatedAgainstOneBeingEvictedIsNotCounted() {
        var machine = Self.machine(blobs: 5)
        let victims = machine.prune(everything: false)
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: nil, waiter: 0)) != nil)
        machine.settle(reserved: 2 * Self.mib, committed: victims[0], fileExists: true)
        #expect(machine.recordedSize(of: Self.blob(0)) == nil, "a phantom would count bytes the eviction removes")
        #expect(machine.reserved == 0)
    }

    @Test func theFreeSpaceFloorEvictsBeyondTheBudgetAndRefusesWhatItCannotKeep() {
        var machine = BudgetStateMachine<Int>(watermarks: nil, minimumFreeBytes: 5 * Self.mib)
        for n in 0..<3 { machine.load(Self.blob(n), size: 2 * Self.mib) }
        // 6 MiB free, 2 more needed: the floor is short 1 MiB, one blob goes.
        #expect(evicted(machine.reserve(2 * Self.mib, isFill: false, freeDiskBytes: 6 * Self.mib, waiter: 0)) == [Self.blob(0)])
        guard case .refused(.diskFloor) = machine.reserve(8 * Self.mib, isFill: false, freeDiskBytes: 6 * Self.mib, waiter: 0) else {
            Issue.record("the floor cannot be kept even after evicting the two blobs left")
            return
        }
    }

    @Test func aBlobAFillIsPublishingIsKeptFromPrunesAndTheOperatorHearsWhy() {
        var machine = Self.machine(blobs: 3)
        let fill = BlobHolder.fill(ImageKey(cloud: "c", imageID: "i"))
        #expect(machine.hold(Self.blob(0), by: fill, waiter: 1) == .held)
        #expect(!machine.prune(everything: true).map(\.digest).contains(Self.blob(0)), "a clear leaves the blob being published")
        do {
            _ = try machine.evictNow(Self.blob(0))
            Issue.record("the operator's eviction of a blob being published went ahead")
        } catch {
            guard case .beingCommitted = error else { Issue.record("refused as \(error)"); return }
            #expect(error.description.contains("retry in a moment"))
        }
        machine.release(Self.blob(0), by: fill)
        #expect(machine.prune(everything: true).map(\.digest) == [Self.blob(0)], "released, it goes with the next clear")
    }

    @Test func theOperatorsEvictionNamesWhatKeepsABlob() {
        var machine = Self.machine(blobs: 3)
        machine.setPinned(Self.blob(0), true)
        machine.beginRead(Self.blob(1))
        #expect(throws: EvictionRefusal.self) { _ = try machine.evictNow(Self.blob(0)) }
        #expect(throws: EvictionRefusal.self) { _ = try machine.evictNow(Self.blob(1)) }
        #expect(throws: EvictionRefusal.self) { _ = try machine.evictNow(Self.blob(7)) }
        #expect((try? machine.evictNow(Self.blob(2)))?.size == 2 * Self.mib)
        #expect(machine.withdraw(Self.blob(2)) == false, "being evicted already")
        #expect(machine.withdraw(Self.blob(1)) == true, "bad bytes go whatever holds them")
    }
}
