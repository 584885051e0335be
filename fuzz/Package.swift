// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for Depot's parsers of untrusted input. Each target compiles the parser's
// own source file (symlinked from ../Sources) so that only the parser, not the server around
// it, is built with coverage instrumentation. Each main.swift hands its check to libFuzzer's
// driver (LLVMFuzzerRunDriver). Build and run with scripts/fuzz.
let package = Package(
    name: "DepotFuzz",
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
    ],
    targets: [
        // The declaration of libFuzzer's driver.
        .target(name: "FuzzDriver"),
        // The Range header (RFC 9110 section 14.2) against a body size.
        .executableTarget(name: "FuzzRange", dependencies: ["FuzzDriver"]),
        // The streaming multipart/form-data parser of the Multicloud API's uploads.
        .executableTarget(name: "FuzzMultipart", dependencies: ["FuzzDriver"]),
        // The config file: YAML through Yams, then the typed configuration.
        .executableTarget(name: "FuzzConfig", dependencies: ["FuzzDriver", "Yams"]),
    ]
)
