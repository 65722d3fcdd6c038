// swift-tools-version: 6.1
import PackageDescription

// A user's package: it depends on swift-dma-pools by path (as it would by URL)
// and plugs a memory provider and a TX design of its own into the comparison.
let package = Package(
    name: "CustomDesign",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-dma-pools", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "CustomDesign",
            dependencies: [
                .product(name: "DMAPools", package: "swift-dma-pools"),
                .product(name: "NetStack", package: "swift-dma-pools"),
                .product(name: "NetStackReports", package: "swift-dma-pools"),
            ]
        ),
    ]
)
