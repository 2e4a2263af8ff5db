// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top (each its own module):
//   CKernels (C)  →  WeftTensor (buffers, NUMA, thread pool)  →  WeftComm (MPI)
//   →  WeftModel (config, safetensors, Llama layers, KV cache) + WeftTokenizer
//   →  WeftRuntime (flattened batches, engine, sampling)  →  weft (CLI)
let package = Package(
    name: "Weft",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "weft", targets: ["WeftCLI"]),
        .library(name: "Weft", targets: ["WeftRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System libraries. MPI's handles are macros over global symbols, so
        // CMPI's shim exposes them as inline functions Swift can import.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CNuma", path: "Sources/CNuma", pkgConfig: "numa",
                       providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // The compute kernels: scalar references plus ISA-specific paths
        // selected at run time (no -march flags in the manifest).
        .target(name: "CKernels", path: "CKernels",
                cSettings: [.define("_GNU_SOURCE")],
                linkerSettings: [.linkedLibrary("pthread"), .linkedLibrary("m")]),

        .target(name: "WeftTensor", dependencies: ["CKernels", "CNuma", "COpenBLAS"]),
        .target(name: "WeftComm", dependencies: ["CMPI", "CKernels", "WeftTensor"]),
        .target(name: "WeftTokenizer"),
        // Hugging Face chat templates (the Jinja subset real templates use).
        .target(name: "WeftChatTemplate"),
        .target(name: "WeftModel", dependencies: ["WeftTensor", "WeftComm", "CKernels"]),
        .target(name: "WeftRuntime", dependencies: ["CKernels", "WeftModel", "WeftTokenizer", "WeftComm", "WeftTensor"]),
        .executableTarget(name: "WeftCLI", dependencies: [
            "WeftRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "WeftKernelTests", dependencies: ["CKernels"]),
        .testTarget(name: "WeftTokenizerTests", dependencies: ["WeftTokenizer"]),
        .testTarget(name: "WeftChatTemplateTests", dependencies: ["WeftChatTemplate"]),
        .testTarget(name: "WeftModelTests", dependencies: ["WeftModel", "WeftComm", "WeftTensor"]),
        .testTarget(name: "WeftRuntimeTests", dependencies: ["WeftRuntime"]),
        .testTarget(name: "WeftEndToEndTests", dependencies: ["WeftModel"]),
    ],
    swiftLanguageModes: [.v6]
)
