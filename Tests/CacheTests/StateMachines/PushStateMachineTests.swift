import BlobStore
import Cache
import Catalog
import DepotTestSupport
import Foundation
import Glance
import Testing

/// A push attempt's decisions without Glance: the image's status × the push's method, the
/// glance-direct import followed on a mock clock, the hashes that prove a push, and what the
/// attempt does to the push's record. Statuses and fields are Glance's (glance/db/sqlalchemy
/// models, glance/async_/flows/api_image_import.py for `os_glance_failed_import`).
struct PushStateMachineTests {
    typealias Machine = PushStateMachine<MockClock>
    static let date = Date(timeIntervalSince1970: 1_800_000_000)
    let clock = MockClock()

    static func image(_ status: String, updatedSecondsAgo: Double = 10, _ extra: [String: JSONValue] = [:]) -> GlanceImage {
        let updated = ISO8601DateFormatter().string(from: date.addingTimeInterval(-updatedSecondsAgo))
        return GlanceImage(properties: ["id": .string("i"), "status": .string(status), "updated_at": .string(updated)].merging(extra) { $1 })
    }

    static func machine(_ method: PushRecord.Method) -> Machine {
        Machine(method: method, importWait: .seconds(120), stuckAfter: .seconds(600))
    }

    func first(_ status: String, _ method: PushRecord.Method, updatedSecondsAgo: Double = 10) -> Machine.Action {
        var machine = Self.machine(method)
        #expect(machine.start() == .read(.attempt, after: nil))
        return machine.read(Self.image(status, updatedSecondsAgo: updatedSecondsAgo), now: clock.now, date: Self.date)
    }

    func isPermanent(_ action: Machine.Action) -> Bool {
        if case .end(.permanent) = action { return true }
        return false
    }

    func isRetry(_ action: Machine.Action) -> Bool {
        if case .end(.retry(_, nil, _)) = action { return true }
        return false
    }

    @Test func theImagesStatusAndThePushsMethodChooseTheTransfer() {
        #expect(first("queued", .upload) == .upload)
        #expect(first("queued", .glanceDirect) == .stageAndImport)
        #expect(first("uploading", .glanceDirect) == .importStaged, "staged by an earlier attempt")
        #expect(first("active", .upload) == .verify(Self.image("active")), "an earlier attempt got through")
        #expect(first("active", .glanceDirect) == .verify(Self.image("active")))
        for status in ["saving", "importing", "uploading"] {
            #expect(isRetry(first(status, .upload)), "\(status): a transfer is still running there")
            #expect(isPermanent(first(status, .upload, updatedSecondsAgo: 601)), "\(status) for over stuckAfter")
        }
        for status in ["deactivated", "killed", "deleted", "pending_delete"] {
            #expect(isPermanent(first(status, .upload)), "\(status) takes no data")
            #expect(isPermanent(first(status, .glanceDirect)))
        }
    }

    @Test func anUploadIsVerifiedOnTheRecordReadAfterIt() {
        var machine = Self.machine(.upload)
        _ = machine.read(Self.image("queued"), now: clock.now, date: Self.date)
        #expect(machine.transferred() == .read(.service, after: nil))
        #expect(machine.read(Self.image("active"), now: clock.now, date: Self.date) == .verify(Self.image("active")))
    }

    @Test func aGlanceDirectImportIsFollowedForTheImportWaitOnTheClock() {
        var machine = Self.machine(.glanceDirect)
        #expect(machine.read(Self.image("queued"), now: clock.now, date: Self.date) == .stageAndImport)
        #expect(machine.transferred() == .read(.service, after: nil))
        #expect(machine.read(Self.image("importing"), now: clock.now, date: Self.date) == .read(.service, after: .milliseconds(500)))
        clock.advance(by: .seconds(119))
        #expect(machine.read(Self.image("importing"), now: clock.now, date: Self.date) == .read(.service, after: .milliseconds(500)))
        clock.advance(by: .seconds(1))
        guard case .end(.retry(_, after: 5, _)) = machine.read(Self.image("importing"), now: clock.now, date: Self.date) else {
            Issue.record("after importWait the attempt ends and the push retries")
            return
        }
    }

    @Test func anImportThatEndsIsVerifiedAndOneThatFailedEndsThePush() {
        var machine = Self.machine(.glanceDirect)
        _ = machine.read(Self.image("uploading"), now: clock.now, date: Self.date)
        _ = machine.transferred()
        _ = machine.read(Self.image("importing"), now: clock.now, date: Self.date)
        clock.advance(by: .seconds(3))
        #expect(machine.read(Self.image("active"), now: clock.now, date: Self.date) == .verify(Self.image("active")))

        var failing = Self.machine(.glanceDirect)
        _ = failing.read(Self.image("queued"), now: clock.now, date: Self.date)
        _ = failing.transferred()
        let failed = Self.image("importing", ["os_glance_failed_import": .string("file")])
        #expect(isPermanent(failing.read(failed, now: clock.now, date: Self.date)))
    }

    static func blob(size: Int, sha512: String?, md5: String?) throws -> BlobRecord {
        var fields: [String: Any] = ["sha256": String(repeating: "a", count: 64), "size": size, "createdAt": 0, "lastAccess": 0, "hits": 0, "pinned": false]
        fields["sha512"] = sha512
        fields["md5"] = md5
        return try JSONDecoder().decode(BlobRecord.self, from: JSONSerialization.data(withJSONObject: fields))
    }

    @Test func onlyGlancesOwnSizeAndHashOfTheBlobMakeAPushDone() throws {
        let sha512 = String(repeating: "5", count: 128)
        let blob = try Self.blob(size: 1000, sha512: sha512, md5: String(repeating: "d", count: 32))
        func verdict(_ image: GlanceImage) -> Machine.Action {
            var machine = Self.machine(.upload)
            return machine.verified(image, blob: blob)
        }
        let hashes: [String: JSONValue] = ["size": .number(1000), "os_hash_algo": .string("sha512"), "os_hash_value": .string(sha512)]
        #expect(verdict(Self.image("active", hashes)) == .end(.done))
        #expect(isPermanent(verdict(Self.image("active", hashes.merging(["size": .number(999)]) { $1 }))))
        #expect(isPermanent(verdict(Self.image("active", hashes.merging(["os_hash_value": .string(String(repeating: "6", count: 128))]) { $1 }))))
        #expect(isPermanent(verdict(Self.image("active", ["size": .number(1000), "checksum": .string(String(repeating: "e", count: 32))]))), "MD5 when Glance has no multihash")
        #expect(isPermanent(verdict(Self.image("saving", hashes))), "not active after the upload")
    }

    @Test func refusalsEndThePushAndOutagesOnlyTheAttempt() {
        func http(_ status: Int) -> GlanceError { .http(status: status, message: "", method: "PUT", url: "u") }
        for status in [400, 403, 404, 409, 410, 413, 415] {
            #expect(isPermanentOutcome(Machine.classify(http(status))), "\(status)")
        }
        for status in [401, 408, 429, 500, 502, 503, 504] {
            #expect(!isPermanentOutcome(Machine.classify(http(status))), "\(status)")
        }
        #expect(!isPermanentOutcome(Machine.classify(.transport(message: "reset", method: "PUT", url: "u", curlCode: 56))))
    }

    func isPermanentOutcome(_ outcome: PushOutcome) -> Bool {
        if case .permanent = outcome { return true }
        return false
    }

    @Test func theAttemptsEndSetsThePushsStateErrorAndNextAttempt() {
        var push = PushRecord(cloud: "c", imageID: "i", digest: Digest.of([1], algorithm: .sha256), method: .upload, state: .pending)
        push.end(attempt: .retry("503", after: nil), at: Self.date, backoff: 8)
        #expect(push.state == .pending && push.lastError == "503" && push.nextAttempt == Self.date.timeIntervalSince1970 + 8)
        push.end(attempt: .retry("importing", after: 5), at: Self.date, backoff: 8)
        #expect(push.nextAttempt == Self.date.timeIntervalSince1970 + 5, "the outcome's own wait wins")
        push.end(attempt: .done, at: Self.date, backoff: 8)
        #expect(push.state == .done && push.lastError == nil)
        var failed = push
        failed.end(attempt: .permanent("409"), at: Self.date, backoff: 8)
        #expect(failed.state == .failed && failed.lastError == "409")
    }
}
