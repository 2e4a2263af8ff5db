import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime
import WeftTensor

/// Where the weights come from and how a rank computes.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Hugging Face model folder (config.json, *.safetensors, tokenizer.json) or a GGUF file.")
    var model: String?

    @Option(name: .long, help: "Format of the linear weights: auto (as stored: a bf16 checkpoint stays bf16, GGUF tensors as their blocks), f32, bf16, f16, q8_0, q4_0 or q4_1 (quantized at load with ggml's rule).")
    var weightDtype: String = "auto"

    @Option(name: .long, help: "Folder with tokenizer.json to use instead of the model's own (default: the model folder's tokenizer.json, or a GGUF file's tokenizer).")
    var tokenizer: String?

    @Option(name: .long, help: "Use random weights of this model shape (a config.json-style file, e.g. Configs/models/llama-3.2-1b.json) instead of a checkpoint.")
    var randomWeights: String?

    @Option(name: .long, help: "Seed of --random-weights.")
    var weightSeed: UInt64 = 1

    @Option(name: .long, help: "Compute threads per rank (default: the cores the rank is bound to).")
    var threads: Int?

    @Option(name: .long, help: "KV cache block size in positions.")
    var kvBlockSize: Int = 16

    @Option(name: .long, help: "How the KV cache stores keys and values: f16 (default), bf16 or f32. Attention computes in float32 either way; 16 bits halve the cache's memory and attention's reads.")
    var kvDtype: String = "f16"

    @Option(name: .long, help: "How query heads are shared when the tensor-parallel degree does not divide them: even (5 + 4 of 9 heads, a KV head shared by two ranks held on both, MLP even) or kv-groups (whole KV groups, 6 + 3, MLP rows balanced against the attention).")
    var headSplit: String = "even"

    @Option(name: .long, help: "Where a mixture-of-experts model's routed experts live: tp (every rank holds a slice of every expert, like a dense MLP) or ep (expert parallelism: each rank holds whole experts, an even share, and computes only the tokens routed to them; the reduction after the layer sums the ranks' contributions, no all-to-all). Ignored for dense models.")
    var moePlacement: String = "tp"

    @Option(name: .long, help: "How each layer's reductions run: baseline (MPI_Allreduce, then residual+RMSNorm of every token), fused (fused sequence-parallel AllReduce+residual+RMSNorm), overlap (token split, each half's compute overlapping the other's fused collective) or auto (the cost model chooses per batch).")
    var commMode: String = "auto"

    @Option(name: .long, help: "Transport of the fused collective: auto (shared memory when all ranks share a node, MPI when each rank is alone on its node, hierarchical otherwise), shm, mpi (forces the inter-node path) or hier.")
    var commTransport: String = "auto"

    @Option(name: .long, help: "Number format of the fused collective's transfers between nodes: auto (bf16 when the ranks span several machines, f32 on one), f32, bf16, fp16 or q8_0 (ggml's blocks of 32: int8 values and an fp16 scale, 1.0625 bytes per value). Partial sums are added in float32 on arrival, the residual stays float32; fp16 overflows past 65504. Shared memory always moves float32.")
    var commDtype: String = "auto"

    @Option(name: .long, help: "Treat consecutive groups of this many ranks as one node (to run the inter-node and hierarchical paths on one machine).")
    var ranksPerNode: Int?

    @Option(name: .long, help: "Cores per rank set aside for the communication thread.")
    var commCores: Int = 0

    @Option(name: .long, help: "Seconds to wait for a peer inside a collective before failing.")
    var commTimeout: Double = 120

    @Option(name: .long, help: "With --comm-mode overlap: cut every batch at this row (two chunks), or at these increasing rows (A,B,…: more chunks), instead of the planner's choice.")
    var split: String?

    /// Modes a user may pick; benchmarks add `nocomm`.
    var allowedModes: [CommMode] { [.baseline, .fused, .overlap, .auto] }

    func validate() throws {
        if model == nil && randomWeights == nil { throw ValidationError("give --model DIR|FILE.gguf or --random-weights SHAPE.json") }
        _ = try parsedWeightFormat()
        if model != nil && randomWeights != nil { throw ValidationError("give only one of --model and --random-weights") }
        // Upper bounds keep every later size computation far from overflow.
        if let threads, !(1...4096).contains(threads) { throw ValidationError("--threads must be 1...4096, got \(threads)") }
        if !(1...65536).contains(kvBlockSize) { throw ValidationError("--kv-block-size must be 1...65536, got \(kvBlockSize)") }
        _ = try parsedKVDType()
        _ = try parsedHeadSplit()
        _ = try parsedTransport()
        _ = try parsedWireFormat()
        if !(0...4096).contains(commCores) { throw ValidationError("--comm-cores must be 0...4096, got \(commCores)") }
        if let ranksPerNode, !(1...65536).contains(ranksPerNode) { throw ValidationError("--ranks-per-node must be 1...65536, got \(ranksPerNode)") }
        if !(commTimeout > 0 && commTimeout <= 604_800) { throw ValidationError("--comm-timeout must be > 0 and <= 604800 seconds (a week), got \(commTimeout)") }
        _ = try parsedCuts()
        if split != nil && commMode != "overlap" { throw ValidationError("--split needs --comm-mode overlap") }
    }

    func parsedMode(allowing allowed: [CommMode]) throws -> CommMode {
        guard let mode = CommMode(rawValue: commMode), allowed.contains(mode) else {
            throw ValidationError("--comm-mode must be one of \(allowed.map(\.rawValue).joined(separator: ", ")), got \(commMode)")
        }
        return mode
    }

    func parsedWeightFormat() throws -> WeightFormat? {
        if weightDtype == "auto" { return nil }
        guard let format = WeightFormat(name: weightDtype), format.canQuantize else {
            throw ValidationError("--weight-dtype must be auto, f32, bf16, f16, q8_0, q4_0 or q4_1, got \(weightDtype)")
        }
        return format
    }

    func parsedKVDType() throws -> KVDType {
        guard let dtype = KVDType(rawValue: kvDtype) else {
            throw ValidationError("--kv-dtype must be f32, f16 or bf16, got \(kvDtype)")
        }
        return dtype
    }

    func parsedHeadSplit() throws -> TensorParallelPlan.HeadSplit {
        guard let split = TensorParallelPlan.HeadSplit(rawValue: headSplit) else {
            throw ValidationError("--head-split must be even or kv-groups, got \(headSplit)")
        }
        return split
    }

    func parsedMoEPlacement() throws -> TensorParallelPlan.MoEPlacement {
        guard let placement = TensorParallelPlan.MoEPlacement(rawValue: moePlacement) else {
            throw ValidationError("--moe-placement must be tp or ep, got \(moePlacement)")
        }
        return placement
    }

    func parsedTransport() throws -> CommTransport? {
        if commTransport == "auto" { return nil }
        guard let transport = CommTransport(rawValue: commTransport) else {
            throw ValidationError("--comm-transport must be auto, shm, mpi or hier, got \(commTransport)")
        }
        return transport
    }

    func parsedCuts() throws -> [Int]? {
        guard let split else { return nil }
        let parts = split.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.count <= 15, let cuts = parts as? [Int], cuts.allSatisfy({ (1...(1 << 24)).contains($0) }),
              zip(cuts, cuts.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw ValidationError("--split must be 1 to 15 increasing rows in 1...\(1 << 24), comma-separated, got \(split)")
        }
        return cuts
    }

    func parsedWireFormat() throws -> WireFormat? {
        if commDtype == "auto" { return nil }
        guard let format = WireFormat(rawValue: commDtype == "f16" ? "fp16" : commDtype) else {
            let names = ["auto"] + WireFormat.allCases.map(\.rawValue)
            throw ValidationError("--comm-dtype must be \(names.dropLast().joined(separator: ", ")) or \(names.last!), got \(commDtype)")
        }
        return format
    }

    func engineConfiguration(maxSequenceLength: Int? = nil, mode: CommMode? = nil) throws -> EngineConfiguration {
        let weights: EngineConfiguration.Weights
        if let model {
            weights = .checkpoint(URL(fileURLWithPath: model))
        } else {
            weights = .random(shape: URL(fileURLWithPath: randomWeights!), seed: weightSeed)
        }
        var configuration = EngineConfiguration(weights: weights, threads: threads)
        configuration.weightFormat = try parsedWeightFormat()
        configuration.tokenizerDirectory = tokenizer.map { path in
            let url = URL(fileURLWithPath: path)
            return url.lastPathComponent == "tokenizer.json" ? url.deletingLastPathComponent() : url
        }
        configuration.kvBlockSize = kvBlockSize
        configuration.kvDType = try parsedKVDType()
        configuration.headSplit = try parsedHeadSplit()
        configuration.moePlacement = try parsedMoEPlacement()
        configuration.maxSequenceLength = maxSequenceLength
        configuration.commMode = try mode ?? parsedMode(allowing: allowedModes)
        configuration.commTransport = try parsedTransport()
        configuration.wireFormat = try parsedWireFormat()
        configuration.commCores = commCores
        configuration.commTimeout = commTimeout
        configuration.forcedCuts = try parsedCuts()
        configuration.ranksPerNode = ranksPerNode
        return configuration
    }
}

/// How `generate` and `chat` pick each token.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Double = 0

    @Option(help: "Nucleus sampling: keep the smallest set of tokens whose probability reaches P.")
    var topP: Double = 1

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    func validate() throws {
        do { try Sampler.validate(temperature: temperature, topP: topP) } catch { throw ParameterFlags.asOption(error) }
    }

    func sampler() -> Sampler { Sampler(temperature: temperature, topP: topP, seed: seed) }
}

/// Parses "1,2,3" into token ids.
func parseTokenList(_ text: String, option: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    return try parts.map { part in
        guard let id = Int(part.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(option): \"\(part)\" is not a token id (expected comma-separated integers like 1,2,3)")
        }
        return id
    }
}

/// JSON text of an encodable value, keys in a stable order.
func jsonString<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// The one place where the libraries' parameter names meet the CLI's flags:
/// libraries name what an embedder set (`EngineConfiguration.kvBlocks`), and
/// wherever the CLI prints an error it shows the flag the user typed
/// (`--kv-blocks`) instead.
enum ParameterFlags {
    /// Library parameter name → CLI flag.
    static let flags: [String: String] = [
        // WeftRuntime.Engine
        "EngineConfiguration.commCores": "--comm-cores",
        "EngineConfiguration.kvBlockSize": "--kv-block-size",
        "EngineConfiguration.kvBlocks": "--kv-blocks",
        "EngineConfiguration.forcedCuts": "--split",
        "EngineConfiguration.threads": "--threads",
        "Engine.generate(maxNewTokens:)": "--max-tokens",
        // WeftRuntime.Sampler
        "Sampler.temperature": "--temperature",
        "Sampler.topP": "--top-p",
        // WeftTensor
        "ComputePool(threads:)": "--threads",
        // WeftRuntime.ServingEngine (weft serve)
        "ServingConfiguration.maxRunningSequences": "--max-num-seqs",
        "ServingConfiguration.maxBatchTokens": "--max-batch-tokens",
        "ServingConfiguration.maxQueuedRequests": "--max-queue",
        "ServingConfiguration.maxModelLength": "--max-model-len",
        "ServingConfiguration.kvBlocks": "--kv-blocks",
        "ServingConfiguration.stepTimeTarget": "--step-time-ratio",
        "ServingConfiguration.prefixCaching": "--no-prefix-cache",
        // WeftComm.FusedResidualNorm
        "FusedResidualNorm(ranksPerNode:)": "--ranks-per-node",
        "FusedResidualNorm(transport:)": "--comm-transport",
    ]

    /// The error as the CLI prints it: a library's invalid parameter under its
    /// flag; anything else as the error describes itself.
    static func message(for error: Error) -> String {
        if let parameter = (error as? ParameterError)?.parameter { return message(for: parameter) }
        // An error agreed across ranks (`Communicator.agree`) arrives as the
        // failing rank's text, "name: problem".
        if let error = error as? CommError, case .failedOnRank(_, let text) = error { return rewritten(text) }
        return String(describing: error)
    }

    /// A library's invalid-parameter error as the CLI's own error about the
    /// flag (`RuntimeError.invalidOption`); other errors unchanged.
    static func asOption(_ error: Error) -> Error {
        guard let parameter = (error as? ParameterError)?.parameter else { return error }
        return RuntimeError.invalidOption(flags[parameter.name] ?? parameter.name, parameter.problem)
    }

    static func message(for parameter: InvalidParameter) -> String {
        "\(flags[parameter.name] ?? parameter.name): \(parameter.problem)"
    }

    /// `text` with a leading "<library parameter name>: " replaced by the flag
    /// (only names in the table; other text is returned as it is).
    static func rewritten(_ text: String) -> String {
        guard let colon = text.range(of: ": ") else { return text }
        let name = String(text[..<colon.lowerBound])
        guard flags[name] != nil else { return text }
        return message(for: InvalidParameter(name, String(text[colon.upperBound...])))
    }
}
