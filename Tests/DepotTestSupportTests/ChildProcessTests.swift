import DepotTestSupport
import Foundation
import Testing

/// What the tests' child processes get from the runner: a long-lived server must not hold
/// another child's pipe open (its reader would never see the end of the output), so a child
/// gets standard input, output and error and no other descriptor of the runner.
@Suite struct ChildProcessTests {
    /// A pipe of the runner's, open without close-on-exec, as a library may leave one.
    static func inheritablePipe() throws -> (Int32, Int32) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return (ends[0], ends[1])
    }

    static func descriptors(of pid: pid_t) throws -> Set<Int32> {
        Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int32($0) })
    }

    @Test func aCommandGetsOnlyItsStandardDescriptors() async throws {
        let (readEnd, writeEnd) = try Self.inheritablePipe()
        defer { close(readEnd); close(writeEnd) }
        // The shell lists its own descriptors ($$: `ls` itself opens one to read the list).
        let listed = try await run("/bin/sh", ["-c", "ls /proc/$$/fd"])
        #expect(Set(listed.split(separator: "\n").compactMap { Int32($0) }) == [0, 1, 2], "\(listed)")
    }

    @Test func aLongLivedChildGetsOnlyItsStandardDescriptors() async throws {
        let (readEnd, writeEnd) = try Self.inheritablePipe()
        defer { close(readEnd); close(writeEnd) }
        let child = try await ChildProcess.start(["/bin/sleep", "60"])
        let held = try Self.descriptors(of: child.pid)
        let status = await child.stop(signal: SIGKILL)
        #expect(held == [0, 1, 2])
        #expect(status == .signaled(SIGKILL))
    }

    @Test func inputIsFedWhileOutputIsReadAndAKillIsReportedAsASignal() async throws {
        // cat answers each block before it reads the next: 4 MiB each way cannot sit in the
        // pipes, so this ends only if input is written while output is read.
        let input = pseudoRandomBytes(count: 4 << 20, seed: 14)
        let echoed = try await spawn("/bin/cat", [], stdin: input)
        #expect(echoed.status == 0)
        #expect(echoed.stdout == input)
        let killed = try await spawn("/bin/sh", ["-c", "kill -9 $$"])
        #expect(killed.status == 128 + SIGKILL)
    }

    @Test func aChildThatEndsWithoutReadingItsInputIsAnAnswerNotACrash() async throws {
        // 1 MiB cannot fit in the pipe: the write fails once `true` has ended.
        for _ in 0..<20 {
            let result = try await spawn("/bin/true", [], stdin: [UInt8](repeating: 7, count: 1 << 20))
            #expect(result.status == 0)
        }
    }

    @Test func standardErrorGoesToTheFileNamed() async throws {
        let dir = TemporaryDirectory("depot-child-stderr")
        let result = try await spawn("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], stderrPath: dir.path + "/err")
        #expect(result.status == 3)
        #expect(String(decoding: result.stdout, as: UTF8.self) == "out\n")
        #expect(try String(contentsOfFile: dir.path + "/err", encoding: .utf8) == "err\n")
    }
}
