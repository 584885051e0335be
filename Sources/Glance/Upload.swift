import Foundation

/// Where uploaded image data comes from.
public enum UploadSource: Sendable {
    /// A local file, read on the transfer thread; sent with Content-Length.
    case file(path: String)
    /// Bytes in memory.
    case bytes([UInt8])
    /// Chunks from async code: `produce` hands each chunk to `emit`, which waits while the
    /// upload is behind and returns false once it has ended. With a length the body is sent
    /// with Content-Length, else chunked.
    case producer(length: UInt64?, produce: @Sendable (_ emit: @Sendable ([UInt8]) async -> Bool) async throws -> Void)

    /// The chunks of an async sequence.
    public static func stream<S: AsyncSequence & Sendable>(length: UInt64?, chunks: S) -> UploadSource where S.Element == [UInt8] {
        .producer(length: length) { emit in
            for try await chunk in chunks {
                guard await emit(chunk) else { return }
            }
        }
    }
}

extension GlanceClient {
    /// Streams a body to `PUT path`. Not retried: Glance may have consumed part of it.
    func upload(path: String, source: UploadSource, auth: RequestAuth) async throws(GlanceError) {
        let target = try await resolve(auth)
        let url = target.endpoint + path
        var request = HTTPRequest(method: "PUT", url: url, headers: target.headers)
        request.headers.append(("Content-Type", "application/octet-stream"))
        var produced: ProducedBody?
        switch source {
        case let .bytes(bytes):
            request.body = .bytes(bytes)
        case let .file(filePath):
            let fd = open(filePath, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw .requestBody(reason: "cannot open \(filePath): \(String(cString: strerror(errno)))", url: url)
            }
            var st = stat()
            fstat(fd, &st)
            let file = FileDescriptorBox(fd)
            request.body = .stream(length: UInt64(st.st_size)) { buffer in
                while true {
                    let n = read(file.fd, buffer.baseAddress, buffer.count)
                    if n >= 0 { return n }
                    if errno != EINTR { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                }
            }
        case let .producer(length, produce):
            produced = ProducedBody(length: length, capacity: 4 << 20, produce: produce)
            request.body = produced!.body
        }
        let outcome = await perform(request)
        // The transfer is over, whether or not the stream was: stop its producer.
        produced?.stop()
        switch outcome {
        case let .success((head, body)) where head.status >= 300:
            throw .http(status: head.status, message: GlanceError.message(fromBody: body), method: "PUT", url: url)
        case .success:
            return
        case let .failure(failure):
            throw glanceError(failure, method: "PUT", url: url)
        }
    }
}

/// A producer's chunks on their way to a transfer thread, through a bounded channel.
struct ProducedBody: Sendable {
    let body: RequestBody
    private let channel: ByteChannel
    private let pump: Task<Void, Never>

    /// Starts the producer at once; the transfer thread reads what it emits.
    init(length: UInt64?, capacity: Int, produce: @escaping @Sendable (_ emit: @Sendable ([UInt8]) async -> Bool) async throws -> Void) {
        let channel = ByteChannel(capacity: capacity)
        self.channel = channel
        pump = Task {
            do {
                try await produce { chunk in await channel.send(chunk) }
                channel.finish()
            } catch {
                channel.finish(throwing: error)
            }
        }
        body = .stream(length: length) { buffer in try channel.take(into: buffer) }
    }

    /// The transfer ended: the producer's next emit returns false, and it is cancelled.
    func stop() {
        channel.cancelConsumer()
        pump.cancel()
    }
}

/// Closes a descriptor when the last reference goes.
final class FileDescriptorBox: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}
