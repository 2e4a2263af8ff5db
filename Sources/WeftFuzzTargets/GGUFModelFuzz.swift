import Foundation
import WeftModel
import WeftTensor

extension FuzzTargets {
    /// One thread, unpinned: the loader's page-touching runs on it.
    nonisolated(unsafe) private static var modelPool: ComputePool? = try? ComputePool(threads: 1, pin: false)

    /// GGUFFile maps a path: each input is written to this per-process file
    /// (in memory under /dev/shm where there is one).
    private static let modelPath: String = {
        let directory = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return "\(directory)/weft-fuzz-gguf-model-\(getpid()).gguf"
    }()

    /// ModelConfig.Limits.expertLayers bounds a model's routed expert tensors
    /// (both inputs in Tests/Fuzz/regressions/gguf-model were loader bugs,
    /// fixed: a routed expert stored as a vector passed validation and was
    /// read past; 4096 × 4096 experts listed 50 million names). Above this
    /// many names an input is still skipped, only to keep each execution
    /// short (the limit allows about 200,000).
    static let maxModelTensors = 1 << 14

    /// The bytes as a whole GGUF file, opened as a model: the configuration
    /// from its metadata (`ModelConfig(gguf:)`), every tensor the config
    /// needs validated against the tensor table (stacked expert tensors
    /// included), and, if all validate and the model is small, its weights
    /// loaded at tensor-parallel degree 1 and as rank 1 of 2 (for MoE models
    /// under both expert placements), so AddressSanitizer sees every read of
    /// the q/k row permutation, the expert row mapping and the block copies.
    /// The file's length modulo 4 picks the load format: stored, q8_0, bf16, q4_1.
    public static func ggufModel(_ bytes: [UInt8]) {
        let path = modelPath
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        // The mapping outlives the name: unlinked at once, so a crash below leaves no file behind.
        let opened = written == bytes.count ? try? GGUFFile(path: path) : nil
        unlink(path)
        guard let file = opened else { return }
        guard let preview = try? ModelConfig(gguf: file) else { return }
        let names = preview.layerCount * (preview.tensorTable.entries.count + 3 * (preview.moe?.expertCount ?? 0))
        guard names <= maxModelTensors else { return }
        guard let source = try? GGUFSource(file: file) else { return }
        let config = source.config
        promise(config == preview, "GGUFSource's config differs from ModelConfig(gguf:)")

        var valid = true
        for tensor in config.tensorTable.tensors(config) {
            let shape = tensor.entry.shape(config)
            promise(!shape.isEmpty && shape.allSatisfy { $0 > 0 }, "tensor \(tensor.name) of shape \(shape)")
            do { try source.validate(tensor.name, shape: shape) } catch { valid = false }
            _ = source.storedFormat(tensor.name)
        }
        guard valid, config.parameterCount <= 1 << 20, let pool = modelPool else { return }
        let format: WeightFormat? = [nil, .q8_0, .bf16, .q4_1][bytes.count % 4]
        let alignment = LlamaWeights.intermediateAlignment(config: config, source: source, format: format)
        var plans: [TensorParallelPlan?] = [try? TensorParallelPlan(config: config, rank: 0, size: 1, intermediateAlignment: alignment)]
        for placement in config.moe == nil ? [.tensorParallel] : TensorParallelPlan.MoEPlacement.allCases {
            plans.append(try? TensorParallelPlan(config: config, rank: 1, size: 2, intermediateAlignment: alignment, moePlacement: placement))
        }
        for case let plan? in plans {
            // Loading may throw (e.g. a model larger than the host); it must not trap.
            guard let weights = try? LlamaWeights(config: config, plan: plan, source: source, pool: pool, node: nil, format: format)
            else { continue }
            promise(weights.byteCount > 0, "loaded weights hold no bytes")
            promise(weights.layers.count == config.layerCount, "\(weights.layers.count) layers loaded of \(config.layerCount)")
            for (i, layer) in weights.layers.enumerated() {
                promise((layer.experts != nil) == config.isSparse(layer: i) && (layer.gateUp == nil) == config.isSparse(layer: i),
                        "layer \(i): experts \(layer.experts != nil), sparse \(config.isSparse(layer: i))")
                if let experts = layer.experts {
                    promise(experts.held == plan.experts && experts.gateUp.count == plan.experts.count
                                && experts.down.count == plan.experts.count,
                            "layer \(i) holds experts \(experts.held) (\(experts.gateUp.count) loaded), plan \(plan.experts)")
                }
            }
        }
    }
}
