import DepotTestSupport
import Foundation
import Testing

/// A power cut, not a `kill -9`: what reached the disk survives, what sat in the page cache
/// does not. Depot's data directory is an ext4 filesystem on a loop device over a file. The
/// loop device writes what the filesystem sends it into that file, so a copy of the file taken
/// while the filesystem is still mounted holds exactly what was flushed to the "disk" (fsync,
/// or writeback, which the mount's `commit=600` and the few seconds the test takes keep away)
/// and none of the dirty pages above it: the state a machine finds after losing power (with a
/// disk that keeps what it was sent). The copy is mounted (ext4 replays its journal) and a
/// new Depot starts on it. Needs root (losetup, mount); device-mapper (dm-flakey) is not in
/// this kernel, so the loop device is the "disk".
@Suite(.enabled(if: rootTestsEnabled, "losetup and mount need root; CI=true runs it anyway, to fail"), .serialized)
struct PowerCutTests {
    let glance: GlanceServer

    init() async throws { glance = try await GlanceServer.shared() }

    /// An ext4 filesystem on a loop device over a file, mounted at `mountPoint`.
    final class LoopDisk {
        let backing: String
        let mountPoint: String
        var device = ""

        init(backing: String, mountPoint: String, format: Bool) async throws {
            self.backing = backing
            self.mountPoint = mountPoint
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            if format { _ = try await run("/usr/bin/truncate", ["-s", "256M", backing]) }
            device = try await run("/usr/bin/env", ["losetup", "--find", "--show", backing]).trimmingCharacters(in: .whitespacesAndNewlines)
            if format { _ = try await run("/usr/bin/env", ["mkfs.ext4", "-q", device]) }
            _ = try await run("/bin/mount", ["-o", "commit=600", device, mountPoint])
        }

        /// The disk as a power cut would leave it: a copy of what the loop device was sent.
        func copyAsIfPowerFailed(to path: String) async throws {
            _ = try await run("/bin/cp", ["--sparse=always", backing, path])
        }

        /// Unmounts and frees the loop device with the calls themselves: a deinit cannot
        /// await a child process.
        deinit {
            unmount(mountPoint)
            if !device.isEmpty {
                let fd = open(device, O_RDONLY)
                if fd >= 0 {
                    _ = ioctl(fd, 0x4C01, 0)  // LOOP_CLR_FD, as `losetup -d`
                    close(fd)
                }
            }
        }
    }

    @Test func anAcknowledgedUploadSurvivesAPowerCut() async throws {
        let work = TemporaryDirectory("depot-powercut")
        let proxy = try FaultProxy(upstreamPort: glance.port)
        defer { proxy.stop() }
        let file = try TestImageFile(megabytes: 3, seed: 97)
        var disk: LoopDisk? = try await LoopDisk(backing: work.path + "/disk.img", mountPoint: work.path + "/before", format: true)
        let first = try await DepotProcess.start([
            "--data-dir", work.path + "/before/data", "--glance-url", proxy.url, "--service-token", DepotHarness.serviceToken,
        ])
        let image = try await createImage(first.url)
        // Every read towards Glance waits 200 ms: the push (48 reads of 64 KiB) cannot end before
        // the cut, and the image must reach Glance from what the disk kept.
        proxy.setFaults { $0.latency = .milliseconds(200) }
        let put = try await spawn("/usr/bin/curl", [
            "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-T", file.path,
            "-H", "X-Auth-Token: \(GlanceServer.alice)", "\(first.url)/v2/images/\(image.id)/file",
        ])
        #expect(put.status == 0)
        #expect(String(decoding: put.stdout, as: UTF8.self) == "204")
        // The cut: Depot frozen at once, the disk copied as the loop device holds it.
        kill(first.pid, SIGSTOP)
        try await disk?.copyAsIfPowerFailed(to: work.path + "/after.img")
        _ = await first.stop(signal: SIGKILL)
        disk = nil
        proxy.setFaults { $0.latency = nil }

        let after = try await LoopDisk(backing: work.path + "/after.img", mountPoint: work.path + "/after", format: false)
        let second = try await DepotProcess.start([
            "--data-dir", work.path + "/after/data", "--glance-url", glance.url, "--service-token", DepotHarness.serviceToken,
        ])
        defer {
            second.stopBlocking()
            withExtendedLifetime(after) {}  // unmounted once Depot is gone
        }
        let deadline = ContinuousClock.now + .seconds(60)
        var inGlance = try await glanceAsAlice(glance.url).showImage(image.id)
        while inGlance.status != "active", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            inGlance = try await glanceAsAlice(glance.url).showImage(image.id)
        }
        #expect(inGlance.status == "active", "the acknowledged upload was lost in the power cut; Depot's log: \(second.log.suffix(2000))")
        #expect(inGlance.osHashValue == file.sha512)
        #expect(inGlance.size == file.size)
    }
}
