// swift-tools-version:6.0
import PackageDescription
import Foundation

// Absolute path of this package, for the linker version script of libpeftkit.so.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

let package = Package(
    name: "PEFTKit",
    products: [
        // The Swift API. No unsafe flags anywhere in its targets, so other packages can depend on it.
        .library(name: "PEFTKit", targets: ["PEFTKit"]),
        // libpeftkit.so: the C ABI of include/peftkit.h, exporting only peftkit_* symbols.
        .library(name: "peftkit", type: .dynamic, targets: ["PEFTKitC"]),
        .executable(name: "peftkit-cli", targets: ["peftkit-cli"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(name: "CPEFTKit"),
        // Quantized-weight kernels in C: per-function target attributes (AVX2, AVX-512) with run-time dispatch,
        // which Swift cannot express. No unsafe flags, no -march: it builds for any x86-64 (and elsewhere, scalar).
        .target(
            name: "CPEFTKitKernels",
            exclude: ["quant_body.h", "quant_simd.h", "quant_common.h", "elementwise_body.h"]
        ),
        .target(
            name: "PEFTKit",
            dependencies: ["COpenBLAS", "CPEFTKitKernels"]
        ),
        .target(
            name: "PEFTKitC",
            dependencies: ["PEFTKit", "CPEFTKit"],
            exclude: ["exports.map"],
            linkerSettings: [
                // Export only peftkit_* (symbol version PEFTKIT_1), name the ABI generation in the SONAME, link
                // the Swift runtime statically, and refuse undefined symbols so the .so is self-contained
                // (FoundationEssentials' static helpers are named explicitly).
                .unsafeFlags([
                    "-Xlinker", "--version-script=\(packageRoot)/Sources/PEFTKitC/exports.map",
                    "-Xlinker", "-soname=libpeftkit.so.1",
                    "-static-stdlib",
                    "-Xlinker", "-z", "-Xlinker", "defs",
                    "-l_FoundationCollections", "-l_FoundationCShims",
                ]),
            ]
        ),
        .executableTarget(
            name: "peftkit-cli",
            dependencies: [
                "PEFTKit",
                "COpenBLAS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PEFTKitTests",
            dependencies: ["PEFTKit"]
        ),
    ]
)
