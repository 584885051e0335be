import Glibc
import NIOCore

/// An accepted TCP connection's socket, for the one option set twice on every corked answer
/// (`TCP_CORK`, tcp(7)) without NIO's option machinery.
///
/// NIO's `syncOptions.setOption` finds a socket option by casting the generic option to each
/// option type its channel classes know, about 1,800 instructions a call
/// (`benchmarks/instructions` with every hit corked: 39,900 instructions per hit through NIO's
/// options, 36,500 through this, 35,600 not corked); `setsockopt` itself costs a system call and
/// a few dozen instructions.
///
/// NIO names no descriptor of an accepted channel, but its `SocketChannel` prints it (`fd=N` in
/// its `description`). A descriptor read from there is used only once the socket it names is
/// known to be this connection: a TCP stream socket whose local and peer addresses are the
/// channel's (a TCP connection's four-tuple names it alone). Anything else (another NIO that
/// prints otherwise, a channel that is not a socket, as in tests) gives nil, and the caller
/// keeps NIO's options. Finding the socket (the channel's description and three system calls)
/// costs more than one answer's corking through NIO, so `WireFastPath` looks it up at a
/// connection's second corked answer.
///
/// A descriptor is the channel's only while the channel is open: NIO closes it on the
/// channel's event loop, after which the number can name any file the process opens next.
/// Use it on that event loop, and only while `channel.isActive`.
public struct ConnectionSocket: Equatable, Sendable {
    public let descriptor: CInt

    /// The socket of `channel`, an accepted or connected TCP channel on an IP address; nil
    /// when it cannot be shown to be that channel's.
    /// - Precondition: called on the channel's event loop, while it is active.
    public init?(of channel: any Channel) {
        guard let local = channel.localAddress, let remote = channel.remoteAddress,
              let descriptor = Self.printedDescriptor(String(describing: channel))
        else { return nil }
        self.init(descriptor: descriptor, local: local, remote: remote)
    }

    /// `descriptor`, if it is a TCP stream socket between `local` and `remote`.
    init?(descriptor: CInt, local: SocketAddress, remote: SocketAddress) {
        var type: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == CInt(SOCK_STREAM.rawValue),
              Self.address(of: descriptor, getsockname, is: local), Self.address(of: descriptor, getpeername, is: remote)
        else { return nil }
        self.descriptor = descriptor
    }

    /// Sets or clears `TCP_CORK`; false when the socket refused it.
    @discardableResult
    public func cork(_ on: Bool) -> Bool {
        var value: CInt = on ? 1 : 0
        return setsockopt(descriptor, CInt(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<CInt>.size)) == 0
    }

    /// Flushes `context`'s channel corked: a head and its file region leave in one segment, and
    /// uncorking pushes what is left at once. The uncork is skipped once the channel is closed:
    /// a failed write closes it within the flush, and its descriptor with it, and the number may
    /// already name another file.
    /// - Precondition: called on the channel's event loop, while it is active.
    public func flushCorked(_ context: ChannelHandlerContext) {
        cork(true)
        context.flush()
        if context.channel.isActive { cork(false) }
    }

    /// The `N` of the first `fd=N` in `description`.
    static func printedDescriptor(_ description: String) -> CInt? {
        guard let start = description.utf8.firstRange(of: "fd=".utf8)?.upperBound else { return nil }
        let digits = description.utf8[start...].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        guard !digits.isEmpty, digits.count <= 9 else { return nil }
        return CInt(String(decoding: digits, as: UTF8.self))
    }

    /// Whether the address `name` (`getsockname` or `getpeername`) gives for `descriptor` is
    /// `expected`, compared as family, port and address bytes.
    private static func address(
        of descriptor: CInt, _ name: (CInt, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> CInt, is expected: SocketAddress
    ) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let got = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { name(descriptor, $0, &length) }
        }
        guard got == 0 else { return false }
        switch expected {
        case let .v4(address):
            guard storage.ss_family == sa_family_t(AF_INET) else { return false }
            let actual = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            return actual.sin_port == address.address.sin_port && actual.sin_addr.s_addr == address.address.sin_addr.s_addr
        case let .v6(address):
            guard storage.ss_family == sa_family_t(AF_INET6) else { return false }
            let actual = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let wanted = address.address
            return actual.sin6_port == wanted.sin6_port
                && withUnsafeBytes(of: actual.sin6_addr) { a in withUnsafeBytes(of: wanted.sin6_addr) { a.elementsEqual($0) } }
        case .unixDomainSocket:
            return false
        }
    }
}
