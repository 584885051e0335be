import Cache
import Foundation
import Glance
import HTTPCore
import NIOHTTP1

extension DepotHandler {
    // MARK: Readiness

    /// Ready when the store is writable and the Catalog answers. Backends are reported per
    /// cloud (a Glance version document, or what is wrong: see `BackendCheck`) but do not make
    /// Depot unready: it serves cached images through an outage.
    func readiness(_ response: ResponseWriter) async {
        var report: [String: Any] = [:]
        var ready = true
        do {
            try cache.store.checkWritable()
            report["store"] = "writable"
        } catch {
            report["store"] = "\(error)"
            ready = false
        }
        do {
            try cache.catalog.ping()
            report["catalog"] = "open"
        } catch {
            report["catalog"] = "\(error)"
            ready = false
        }
        report["clouds"] = await withTaskGroup(of: (String, String).self) { group in
            for (name, client) in cache.clouds {
                group.addTask { (name, await client.checkBackend(timeout: .seconds(5)).summary) }
            }
            var clouds: [String: String] = [:]
            for await (name, summary) in group { clouds[name] = summary }
            return clouds
        }
        report["status"] = ready ? "ready" : "not ready"
        await response.sendJSON(ready ? .ok : .serviceUnavailable, report)
    }

    // MARK: Versions

    /// Glance's version document with its links pointing at Depot, so clients discover Depot as
    /// their image endpoint.
    func versions(_ request: Request, _ response: ResponseWriter, cloud: String, prefix: String) async {
        let host = request.headers.first(name: "host") ?? "localhost"
        let base = "http://\(host)\(prefix)"
        var document: [String: Any] = ["versions": [[String: Any]]()]
        do {
            let client = try cache.client(for: cloud)
            let answer = try await client.forward(method: "GET", pathAndQuery: "/versions", headers: [], body: nil)
            var bytes: [UInt8] = []
            for try await chunk in answer.body { bytes += chunk }
            if let parsed = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] { document = parsed }
        } catch {
            logger.warning("version discovery from the backend failed; answering with v2 only", metadata: ["error": "\(error)"])
            document = ["versions": [["id": "v2.0", "status": "CURRENT", "links": [["rel": "self", "href": "\(base)/v2/"]]]]]
        }
        if var list = document["versions"] as? [[String: Any]] {
            // Depot serves Glance's cache API (v2.14: list/queue/delete/clear, v2.16: nodes,
            // v2.18: clean/prune) whether or not the backend has a cache; clients look for them.
            let known = Set(list.compactMap { $0["id"] as? String })
            for id in ["v2.14", "v2.16", "v2.18"] where !known.contains(id) {
                list.append(["id": id, "status": "SUPPORTED"])
            }
            for index in list.indices {
                let id = (list[index]["id"] as? String) ?? "v2"
                let major = id.split(separator: ".").first.map(String.init) ?? "v2"
                list[index]["links"] = [["rel": "self", "href": "\(base)/\(major)/"]]
            }
            document["versions"] = list
        }
        // Glance answers its root with 300 Multiple Choices and /versions with 200.
        let status: HTTPResponseStatus = request.path.hasSuffix("/versions") ? .ok : .multipleChoices
        await response.sendJSON(status, document)
    }
}
