// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top (each its own module):
//   CKernels (C)  →  WeftTensor (buffers, NUMA, thread pool)  →  WeftComm (MPI)
//   →  WeftModel (config, safetensors, Llama layers, KV cache) + WeftTokenizer
//   →  WeftSchedule (the forward pass of any decoder: schedules, reductions,
//      the token split planner and its calibration)
//   →  WeftRuntime (flattened batches, engine, sampling, batch scheduler,
//      the embeddable serving engine)  →  WeftServer (OpenAI-compatible HTTP)
//   →  weft (CLI)
let package = Package(
    name: "Weft",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "weft", targets: ["WeftCLI"]),
        .executable(name: "weft-embedding-example", targets: ["WeftEmbeddingExample"]),
        // The embeddable engine: WeftRuntime's ServingEngine, with the
        // communicator, model and tokenizer types its API uses.
        .library(name: "Weft", targets: ["WeftRuntime", "WeftSchedule", "WeftComm", "WeftModel", "WeftTensor", "WeftTokenizer"]),
        .library(name: "WeftServer", targets: ["WeftServer"]),
        // Fuzzing harness: `weft-fuzz replay TARGET PATH...`, or libFuzzer via Scripts/fuzz.
        .executable(name: "weft-fuzz", targets: ["WeftFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
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
        // Runs a forward pass for any decoder (WeftModel's DecoderLayers) under
        // a schedule; the architectures know nothing of communication.
        .target(name: "WeftSchedule", dependencies: ["CKernels", "WeftModel", "WeftComm", "WeftTensor"]),
        .target(name: "WeftRuntime", dependencies: ["CKernels", "WeftModel", "WeftSchedule", "WeftTokenizer", "WeftComm", "WeftTensor"]),
        // OpenAI-compatible HTTP surface over the serving engine (rank 0).
        .target(name: "WeftServer", dependencies: [
            "WeftRuntime", "WeftTokenizer", "WeftChatTemplate",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Docs/Embedding.md's example app (built and run by the tests).
        .executableTarget(name: "WeftEmbeddingExample", dependencies: [
            "WeftRuntime", "WeftComm",
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        .executableTarget(name: "WeftCLI", dependencies: [
            "WeftRuntime", "WeftSchedule", "WeftServer", "WeftChatTemplate",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Fuzzing (Scripts/fuzz, Tests/Fuzz): every parser of outside data as a
        // byte-level target; WeftFuzzTests replays the seeds and regressions.
        .target(name: "WeftFuzzTargets", dependencies: ["WeftModel", "WeftTokenizer", "WeftChatTemplate", "WeftRuntime", "WeftServer"]),
        .executableTarget(name: "WeftFuzz", dependencies: ["WeftFuzzTargets"]),
        .testTarget(name: "WeftFuzzTests", dependencies: ["WeftFuzzTargets"]),

        .testTarget(name: "WeftKernelTests", dependencies: ["CKernels"]),
        .testTarget(name: "WeftTokenizerTests", dependencies: ["WeftTokenizer"]),
        .testTarget(name: "WeftChatTemplateTests", dependencies: ["WeftChatTemplate"]),
        .testTarget(name: "WeftModelTests", dependencies: ["WeftModel", "WeftSchedule", "WeftComm", "WeftTensor"]),
        .testTarget(name: "WeftRuntimeTests", dependencies: ["WeftRuntime", "WeftSchedule"]),
        .testTarget(name: "WeftScheduleTests", dependencies: ["WeftSchedule", "WeftModel", "WeftComm", "WeftTensor"]),
        .testTarget(name: "WeftEndToEndTests", dependencies: ["WeftModel"]),
    ],
    swiftLanguageModes: [.v6]
)
