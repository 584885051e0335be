import Cache
import Testing

/// The single-flight decisions without a fill: the image is claimed first, and requests that
/// arrive while the claimer reserves room wait for it and join, whatever the budget says.
struct SingleFlightTests {
    let image = ImageKey(cloud: "c", imageID: "i")
    let other = ImageKey(cloud: "c", imageID: "j")

    @Test func requestsDuringTheClaimWaitAndJoinTheFillItStarts() {
        var machine = SingleFlight<String, Int>(limit: 4)
        #expect(isLead(machine.claim(image, waiter: 1)))
        #expect(isWait(machine.claim(image, waiter: 2)))
        #expect(isWait(machine.claim(image, waiter: 3)))
        #expect(machine.flight(image) == nil, "not running until it started")
        #expect(machine.started(image, "fill") == [2, 3])
        guard case let .join(flight) = machine.claim(image, waiter: 4) else { Issue.record("joins the running fill"); return }
        #expect(flight == "fill")
        #expect(machine.running == [image])
    }

    @Test func anAbandonedClaimTellsItsWaitersAndFreesTheImage() {
        var machine = SingleFlight<String, Int>(limit: 4)
        #expect(isLead(machine.claim(image, waiter: 1)))
        #expect(isWait(machine.claim(image, waiter: 2)))
        #expect(machine.abandoned(image) == [2])
        #expect(isLead(machine.claim(image, waiter: 3)), "the next request claims it anew")
    }

    @Test func anEndedFillIsClaimedAnew() {
        var machine = SingleFlight<String, Int>(limit: 4)
        _ = machine.claim(image, waiter: 1)
        _ = machine.started(image, "first")
        machine.ended(image)
        #expect(machine.flight(image) == nil && machine.running.isEmpty)
        #expect(isLead(machine.claim(image, waiter: 2)))
    }

    @Test func claimsCountAgainstTheLimitButJoiningNeverDoes() {
        var machine = SingleFlight<String, Int>(limit: 1)
        #expect(isLead(machine.claim(image, waiter: 1)))
        guard case let .refuse(running) = machine.claim(other, waiter: 2) else { Issue.record("a second image is refused"); return }
        #expect(running == 1)
        #expect(isWait(machine.claim(image, waiter: 3)), "the same image is not refused")
        _ = machine.started(image, "fill")
        guard case .join = machine.claim(image, waiter: 4) else { Issue.record("joins at the limit"); return }
    }

    func isLead(_ action: SingleFlight<String, Int>.ClaimAction) -> Bool {
        if case .lead = action { return true }
        return false
    }

    func isWait(_ action: SingleFlight<String, Int>.ClaimAction) -> Bool {
        if case .wait = action { return true }
        return false
    }
}
