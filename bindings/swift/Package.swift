// swift-tools-version:6.0
// A Swift host of PEFTKit: depends on the library by path, the way an application inside or next to
// the repository would.
import PackageDescription

let package = Package(
    name: "peftkit-swift-example",
    dependencies: [
        .package(name: "PEFTKit", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "peftkit-swift-example",
            dependencies: [.product(name: "PEFTKit", package: "PEFTKit")]
        ),
    ]
)
