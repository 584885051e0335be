import Glibc
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import HTTPCore

/// `ConnectionSocket` finds an accepted channel's own socket, and nothing else, on real sockets.
@Suite struct ConnectionSocketTests {
    /// Two connections accepted by a real NIO server, with the server's side of each.
    final class Accepted: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server: any Channel
        let clients: [any Channel]
        let accepted: [any Channel]

        init() async throws {
            let stream = AsyncStream<any Channel>.makeStream()
            server = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    stream.continuation.yield(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let port = try #require(server.localAddress?.port)
            var clients: [any Channel] = []
            var accepted: [any Channel] = []
            var iterator = stream.stream.makeAsyncIterator()
            for _ in 0..<2 {
                clients.append(try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: port).get())
                accepted.append(try #require(await iterator.next()))
            }
            self.clients = clients
            self.accepted = accepted
        }

        func close() async throws {
            for channel in clients + accepted + [server] { try? await channel.close() }
            try await group.shutdownGracefully()
        }
    }

    static func corked(_ descriptor: CInt) -> CInt {
        var value: CInt = -1
        var length = socklen_t(MemoryLayout<CInt>.size)
        _ = getsockopt(descriptor, CInt(IPPROTO_TCP), TCP_CORK, &value, &length)
        return value
    }

    @Test func anAcceptedChannelsSocketIsFoundAndCorked() async throws {
        let connections = try await Accepted()
        for (accepted, client) in zip(connections.accepted, connections.clients) {
            let socket = try await accepted.eventLoop.submit { ConnectionSocket(of: accepted) }.get()
            let found = try #require(socket, "NIO's SocketChannel no longer prints its descriptor: corking falls back to syncOptions")
            // The descriptor's peer is this client, as the client itself sees its address.
            var peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(found.descriptor, $0, &length) } }
            #expect(Int(UInt16(bigEndian: peer.sin_port)) == client.localAddress?.port)
            #expect(Self.corked(found.descriptor) == 0)
            #expect(found.cork(true) && Self.corked(found.descriptor) == 1)
            #expect(found.cork(false) && Self.corked(found.descriptor) == 0)
        }
        try await connections.close()
    }

    @Test func aDescriptorThatIsNotTheChannelsIsRefused() async throws {
        let connections = try await Accepted()
        let (first, second) = (connections.accepted[0], connections.accepted[1])
        let descriptor = try #require(try await first.eventLoop.submit { ConnectionSocket(of: first) }.get()).descriptor
        let local = try #require(first.localAddress)
        // Another connection's socket, with the first's addresses; and the first's, with the second's peer.
        let other = try #require(try await second.eventLoop.submit { ConnectionSocket(of: second) }.get()).descriptor
        #expect(ConnectionSocket(descriptor: other, local: local, remote: try #require(first.remoteAddress)) == nil)
        #expect(ConnectionSocket(descriptor: descriptor, local: local, remote: try #require(second.remoteAddress)) == nil)
        #expect(ConnectionSocket(descriptor: descriptor, local: local, remote: try #require(first.remoteAddress)) != nil)
        // A file, and a number that names nothing.
        let file = open("/dev/null", O_RDONLY)
        defer { close(file) }
        #expect(ConnectionSocket(descriptor: file, local: local, remote: try #require(first.remoteAddress)) == nil)
        #expect(ConnectionSocket(descriptor: -1, local: local, remote: try #require(first.remoteAddress)) == nil)
        // A channel that is not a socket.
        #expect(ConnectionSocket(of: EmbeddedChannel()) == nil)
        try await connections.close()
    }

    @Test func theDescriptorIsReadFromWhatNIOPrints() {
        #expect(ConnectionSocket.printedDescriptor("SocketChannel { BaseSocket { fd=12 }, active = true }") == 12)
        #expect(ConnectionSocket.printedDescriptor("SocketChannel { BaseSocket { fd=7}") == 7)
        #expect(ConnectionSocket.printedDescriptor("EmbeddedChannel") == nil)
        #expect(ConnectionSocket.printedDescriptor("fd=") == nil)
        #expect(ConnectionSocket.printedDescriptor("fd=x12") == nil)
        #expect(ConnectionSocket.printedDescriptor("fd=99999999999") == nil)
    }
}
