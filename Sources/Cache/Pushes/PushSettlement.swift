import Catalog
import Logging

/// Drops what Depot knows of an image (deleted or deactivated upstream, or its push failed for
/// good): the Catalog's mapping, the resolved blob and the cached decisions.
struct ImageForgetter: Sendable {
    let catalog: Catalog
    let resolver: BlobResolver
    let authorizer: Authorizer
    let logger: Logger

    /// Writes to the Catalog: call it on a disk pool's thread.
    func forget(_ key: ImageKey) {
        do {
            if try catalog.unmap(cloud: key.cloud, imageID: key.imageID) {
                logger.info("forgot image", metadata: ["cloud": "\(key.cloud)", "image": "\(key.imageID)"])
            }
        } catch {
            logger.error("cannot drop image mapping", metadata: ["cloud": "\(key.cloud)", "image": "\(key.imageID)", "error": "\(error)"])
        }
        resolver.forget(key)
        authorizer.forget(key)
    }
}

/// What follows a push that stopped being pending: its blob may be evicted again; after a
/// failure the image no longer maps to it (Glance may hold other bytes under that id).
struct PushSettlement: Sendable {
    let budget: DiskBudget
    let catalog: Catalog
    let forgetter: ImageForgetter
    let landings: Landings

    /// Writes to the Catalog: call it on a disk pool's thread.
    func settled(_ push: PushRecord) {
        let key = ImageKey(cloud: push.cloud, imageID: push.imageID)
        // Before the release: once the blob may go, a reader must be able to tell that
        // Glance's older answers may be stale.
        if push.state == .done { landings.record(cloud: push.cloud) }
        budget.release(push.digest, by: .push(key))
        switch push.state {
        case .done:
            if var record = try? catalog.mapping(cloud: push.cloud, imageID: push.imageID) {
                record.status = "active"
                try? catalog.map(record)
            }
        case .failed:
            forgetter.forget(key)
        default:
            break
        }
    }
}
