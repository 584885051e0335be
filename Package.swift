// swift-tools-version:6.1
import PackageDescription

// Generators, shrinking and seed replay for the fuzz suites (tests only).
let propertyBased: Target.Dependency = .product(name: "PropertyBased", package: "swift-property-based")

let package = Package(
    name: "Depot",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "depot", targets: ["depot"]),
        .library(name: "BlobStore", targets: ["BlobStore"]),
        .library(name: "Glance", targets: ["Glance"]),
        .library(name: "Catalog", targets: ["Catalog"]),
        .library(name: "Eviction", targets: ["Eviction"]),
        .library(name: "Cache", targets: ["Cache"]),
        .library(name: "Proxy", targets: ["Proxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-http-structured-headers", exact: "1.7.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", exact: "1.0.2"),
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
        // Exponential backoff with a cap and jitter: when to retry what failed.
        .target(name: "Retry"),
        // Glance v2 and Keystone v3 client over libcurl, on one transfer loop thread.
        .target(
            name: "Glance",
            dependencies: [
                "CCurl", "CFileIO", "Retry",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The configuration file (YAML, read by Yams) and its typed model.
        .target(name: "DepotConfig", dependencies: [.product(name: "Yams", package: "Yams")]),
        // The embedded SQLite index: blobs, image→blob mappings per cloud.
        .target(
            name: "Catalog",
            dependencies: [
                "BlobStore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // What Glance's upload inspection finds in an image's bytes (format, virtual size, safety
        // checks) and decides: pure, fed as the bytes stream past.
        .target(name: "FormatInspector"),
        // The LRU engine: byte-accurate recency order, watermarks.
        .target(name: "Eviction", dependencies: ["BlobStore"]),
        // What a cache decides without sockets: authorization decisions, single-flight fills,
        // resolving images to blobs.
        .target(
            name: "Cache",
            dependencies: [
                "BlobStore", "Catalog", "Eviction", "FormatInspector", "Glance", "Retry",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // RFC 9110 without sockets: ranges, conditional requests, multipart forms, integrity
        // fields (RFC 9530), and the one plan every serving path follows for GET and HEAD of an
        // image's data.
        .target(
            name: "HTTPSemantics",
            dependencies: [.product(name: "RawStructuredFieldValues", package: "swift-http-structured-headers")]
        ),
        // The HTTP/1.1 server core, knowing NIO and not Depot: bootstrap and limits, each
        // connection's state machine, requests with bodies read on demand, response writing.
        .target(
            name: "HTTPCore",
            dependencies: [
                "CFileIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Depot's application on that core: its routes and responders (Glance v2-compatible
        // routes, ranges, zero-copy hits, uploads, forwarding, the admin and Multicloud APIs).
        .target(
            name: "Proxy",
            dependencies: [
                "BlobStore", "Catalog", "Cache", "FormatInspector", "Glance", "HTTPCore", "HTTPSemantics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "depot",
            dependencies: [
                "BlobStore", "CFileIO", "Catalog", "Cache", "DepotConfig", "Eviction", "FormatInspector", "Glance", "HTTPCore", "Proxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The engine's micro-benchmarks (LRU, range parsing, hashing); benchmarks/engine runs it.
        .executableTarget(name: "depot-engine-bench", dependencies: ["BlobStore", "Eviction", "HTTPSemantics"]),
        .executableTarget(
            name: "depot-nio-floor",
            dependencies: ["HTTPCore", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]
        ),
        // What tests share: a real Glance on loopback, a fault-injecting proxy, temp dirs, child
        // processes (on swift-subprocess), and the fuzz suites' helpers on swift-property-based
        // (random choices, mutations, shrinking).
        .target(
            name: "DepotTestSupport",
            dependencies: [.product(name: "Subprocess", package: "swift-subprocess"), propertyBased]
        ),
        .testTarget(name: "DepotTestSupportTests", dependencies: ["DepotTestSupport"]),
        .testTarget(name: "BlobStoreTests", dependencies: ["BlobStore", "DepotTestSupport"]),
        .testTarget(name: "GlanceTests", dependencies: ["Glance", "BlobStore", "DepotTestSupport"]),
        .testTarget(name: "RetryTests", dependencies: ["Retry"]),
        .testTarget(name: "EvictionTests", dependencies: ["Eviction", "BlobStore"]),
        .testTarget(name: "FormatInspectorTests", dependencies: ["FormatInspector", "DepotTestSupport", propertyBased]),
        .testTarget(name: "DepotConfigTests", dependencies: ["DepotConfig", "DepotTestSupport", propertyBased]),
        .testTarget(name: "HTTPSemanticsTests", dependencies: ["HTTPSemantics", "DepotTestSupport", propertyBased]),
        .testTarget(
            name: "HTTPCoreTests",
            dependencies: [
                "HTTPCore",
                "DepotTestSupport",
                propertyBased,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .testTarget(name: "CatalogTests", dependencies: ["Catalog", "DepotTestSupport"]),
        .testTarget(name: "CacheTests", dependencies: ["Cache", "Catalog", "BlobStore", "Eviction", "FormatInspector", "Glance", "DepotTestSupport"]),
        .testTarget(
            name: "ProxyTests",
            dependencies: [
                "Proxy", "HTTPCore", "HTTPSemantics", "Cache", "Catalog", "BlobStore", "FormatInspector", "Glance", "DepotTestSupport", "depot",
                propertyBased,
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(name: "DepotCLITests", dependencies: ["BlobStore", "DepotTestSupport", "depot"]),
    ],
    swiftLanguageModes: [.v6]
)
