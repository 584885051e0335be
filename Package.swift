// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Depot",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "depot", targets: ["depot"]),
        .library(name: "BlobStore", targets: ["BlobStore"]),
        .library(name: "Glance", targets: ["Glance"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
    ],
    targets: [
        // libcrypto's EVP digests (SHA-256, SHA-512, MD5).
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // Linux file calls that Glibc's Swift module does not expose (sync_file_range).
        .target(name: "CFileIO"),
        // The content-addressed blob store: digests, sharded layout, hashing writers, range reads.
        .target(
            name: "BlobStore",
            dependencies: [
                "COpenSSL",
                "CFileIO",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libcurl (system library); typed wrappers for its variadic calls.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // Glance v2 and Keystone v3 client over libcurl, on threads of its own.
        .target(
            name: "Glance",
            dependencies: [
                "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "depot",
            dependencies: [
                "BlobStore",
                "Glance",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // What tests share: a real Glance on loopback, a fault-injecting proxy, temp dirs.
        .target(name: "DepotTestSupport"),
        .testTarget(name: "BlobStoreTests", dependencies: ["BlobStore", "DepotTestSupport"]),
        .testTarget(name: "GlanceTests", dependencies: ["Glance", "BlobStore", "DepotTestSupport"]),
        .testTarget(name: "DepotCLITests", dependencies: ["BlobStore", "DepotTestSupport", "depot"]),
    ],
    swiftLanguageModes: [.v6]
)
