// swift-tools-version: 6.2
// UMS: live migration of containerized services across autonomous systems.
//
// The targets follow the layers of the UMS design (paper Fig. 1), top to bottom:
//   UMSDecision      inter-system decision: which approach fits a container and a destination
//   UMSCoordination  inter-system coordination: the Coordinator, its HTTP API, the three-phase driver
//   UMSMigration     migration interface: one `MigrationApproach` per level (orchestrator/service/container)
//   UMSCheckpoint    core checkpoint/restore and synchronization: CRIU probing, streaming images while written
//                    (zero pages elided, compressed with zstd or lz4 through CZstd/CLZ4 where it pays)
//   UMSOrchestrator  orchestrator adapters: the `Orchestrator` protocol and its backends (runc, ...);
//                    engines that checkpoint through CRIU use UMSCheckpoint's probe
//   UMSFrontman      the Frontman: holds and forwards a service's clients while it migrates
//   UMSOS            the host: commands, network namespaces, tar, files
//   UMSModel         the shared vocabulary: errors, specifications, migration records and phases
//   UMSAPI           the Coordinator's wire types and HTTP client (used by the CLI and by peers)
import PackageDescription

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "ums",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "umsd", targets: ["umsd"]),
        .executable(name: "ums", targets: ["ums"]),
        .executable(name: "ums-load", targets: ["ums-load"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        .target(
            name: "UMSModel",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSOS",
            dependencies: [
                "UMSModel",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSOrchestrator",
            dependencies: [
                "UMSModel", "UMSOS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // zstd and lz4 for the image stream's compression, from Debian's libzstd-dev and
        // liblz4-dev (scripts/setup installs them).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", providers: [.apt(["liblz4-dev"])]),
        .target(
            name: "UMSCheckpoint",
            dependencies: [
                "UMSModel", "UMSOS", "CZstd", "CLZ4",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSDNS",
            dependencies: [
                "UMSModel",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSTrust",
            dependencies: [
                "UMSModel", "UMSOS",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSImage",
            dependencies: ["UMSModel", "UMSOS"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSMigration",
            dependencies: [
                "UMSModel", "UMSOS", "UMSOrchestrator", "UMSCheckpoint", "UMSImage", "UMSTrust",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSFrontman",
            dependencies: [
                "UMSModel", "UMSOS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSLoad",
            dependencies: [
                "UMSModel", "UMSDNS",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSDecision",
            dependencies: ["UMSModel", "UMSImage"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSAPI",
            dependencies: [
                "UMSModel", "UMSDecision",
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UMSCoordination",
            dependencies: [
                "UMSModel", "UMSOS", "UMSOrchestrator", "UMSCheckpoint", "UMSImage", "UMSMigration", "UMSDecision", "UMSAPI", "UMSFrontman", "UMSTrust", "UMSDNS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "umsd",
            dependencies: [
                "UMSCoordination", "UMSModel",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ums-load",
            dependencies: [
                "UMSLoad",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ums",
            dependencies: [
                "UMSAPI", "UMSModel", "UMSImage", "UMSOS", "UMSTrust",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSModelTests",
            dependencies: ["UMSModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSOrchestratorTests",
            dependencies: ["UMSOrchestrator", "UMSCheckpoint", "UMSOS", "UMSModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSCheckpointTests",
            dependencies: ["UMSCheckpoint", "UMSModel", .product(name: "NIOCore", package: "swift-nio"), .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSCoordinationTests",
            dependencies: [
                "UMSCoordination", "UMSAPI", "UMSDecision", "UMSMigration", "UMSCheckpoint", "UMSOS", "UMSDNS",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSFrontmanTests",
            dependencies: [
                "UMSFrontman", "UMSModel",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSDNSTests",
            dependencies: ["UMSDNS", "UMSModel", "UMSOS"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UMSTrustTests",
            dependencies: [
                "UMSTrust", "UMSModel",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ArchitectureTests",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "UMSAPI", "UMSModel", "UMSLoad", "UMSTrust",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"), .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
