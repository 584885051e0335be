import NIOHTTP1

/// An error that knows its HTTP answer: the status, a message that tells the user what to do,
/// and any headers the answer needs (`retry-after`). `ResponseWriter.sendError(_:)` sends it
/// in Depot's JSON error shape; any other error is a 500 with its description.
public protocol HTTPResponseError: Error {
    var responseStatus: HTTPResponseStatus { get }
    /// What went wrong and what to do about it.
    var responseMessage: String { get }
    var responseHeaders: HTTPHeaders { get }
}

extension HTTPResponseError {
    public var responseHeaders: HTTPHeaders { [:] }
}

extension HTTPResponseError where Self: CustomStringConvertible {
    public var responseMessage: String { description }
}

extension ResponseWriter {
    /// Answers with the error's own status and message (`HTTPResponseError`), else 500;
    /// `headers` are added to the error's own.
    public func sendError(_ error: any Error, headers: HTTPHeaders = [:]) async {
        guard let error = error as? any HTTPResponseError else {
            await sendError(.internalServerError, "\(error)", headers: headers)
            return
        }
        var all = error.responseHeaders
        for (name, value) in headers { all.replaceOrAdd(name: name, value: value) }
        await sendError(error.responseStatus, error.responseMessage, headers: all)
    }
}
