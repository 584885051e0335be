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
    case producer(length: UInt64?, produce: UploadProducer)

    /// The chunks of an async sequence.
    public static func stream<S: AsyncSequence & Sendable>(length: UInt64?, chunks: S) -> UploadSource where S.Element == [UInt8] {
        .producer(length: length) { emit in
            for try await chunk in chunks {
                guard await emit(chunk) else { return }
            }
        }
    }
}

/// Sends an upload's chunks: hands each to `emit`, which waits while the upload is behind and
/// returns false once it has ended.
public typealias UploadProducer = @Sendable (_ emit: @Sendable ([UInt8]) async -> Bool) async throws -> Void

extension GlanceClient {
    /// Streams a body to `PUT path`. Not retried: Glance may have consumed part of it.
    func upload(path: String, source: UploadSource, auth: RequestAuth) async throws(GlanceError) {
        let target = try await resolve(auth)
        let url = target.endpoint + path
        var request = HTTPRequest(method: "PUT", url: url, headers: target.headers)
        request.headers.append(("Content-Type", "application/octet-stream"))
        let produce = try Self.attach(source, to: &request)
        switch await perform(request, feeding: produce) {
        case let .success((head, body)) where head.status >= 300:
            throw .http(status: head.status, message: GlanceError.message(fromBody: body), method: "PUT", url: url)
        case .success:
            return
        case let .failure(failure):
            throw glanceError(failure, method: "PUT", url: url)
        }
    }

    /// Sets the request's body from `source`; returns the producer to feed it, if any.
    static func attach(_ source: UploadSource, to request: inout HTTPRequest) throws(GlanceError) -> UploadProducer? {
        switch source {
        case let .bytes(bytes):
            request.body = .bytes(bytes)
        case let .file(filePath):
            let fd = open(filePath, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw .requestBody(reason: "cannot open \(filePath): \(String(cString: strerror(errno)))", url: request.url)
            }
            let file = FileDescriptorBox(fd)
            var st = stat()
            guard fstat(fd, &st) == 0 else {
                throw .requestBody(reason: "cannot read \(filePath): \(String(cString: strerror(errno)))", url: request.url)
            }
            // The loop reads it ahead of libcurl; the kernel reads ahead of the loop.
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
            request.body = .file(file, length: UInt64(st.st_size))
        case let .producer(length, produce):
            request.body = .streamed(length: length)
            return produce
        }
        return nil
    }
}

/// Closes a descriptor when the last reference goes.
final class FileDescriptorBox: Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}
