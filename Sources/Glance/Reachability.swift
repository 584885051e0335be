import Foundation

extension GlanceClient {
    /// Whether the endpoint answers Glance's version document now: `GET /versions` within
    /// `requestTimeout`, one attempt, a 2xx or 300 answer whose JSON has a `versions` list.
    /// For the reachability gauge; never throws (an unreachable backend is an answer).
    public func answersVersionDocument() async -> Bool {
        guard let endpoint = try? await resolveEndpoint() else { return false }
        let request = HTTPRequest(method: "GET", url: endpoint + "/versions", headers: [("Accept", "application/json")], totalTimeout: configuration.requestTimeout)
        guard case let .success((head, body)) = await perform(request), head.status < 400 else { return false }
        let document = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
        return document?["versions"] is [Any]
    }
}
