/// An image of one cloud: the key of everything Depot knows per image (its blob, its fill, its
/// push, the decisions about it). Image ids are unique within a cloud only.
package struct ImageKey: Hashable, Sendable, CustomStringConvertible {
    package let cloud: String
    package let imageID: String

    package init(cloud: String, imageID: String) {
        self.cloud = cloud
        self.imageID = imageID
    }

    package var description: String { "\(cloud)/\(imageID)" }
}
