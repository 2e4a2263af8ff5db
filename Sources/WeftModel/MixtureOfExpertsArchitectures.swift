/// The mixture-of-experts families: the Llama family's attention (Qwen3's
/// with q/k norms) and, in their sparse layers, a router over SwiGLU
/// experts instead of the dense MLP. Hugging Face names each expert's
/// tensors; GGUF stacks a layer's experts in one 3-D tensor (`ffn_*_exps`).
enum MoEEntries {
    static let isSparseLayer: @Sendable (ModelConfig, Int) -> Bool = { $0.isSparse(layer: $1) }
    static let expertCount: @Sendable (ModelConfig) -> Int = { $0.moe?.expertCount ?? 0 }
    static let expertRows: @Sendable (ModelConfig) -> Int = { $0.moe?.expertIntermediateSize ?? 0 }
    static let sharedRows: @Sendable (ModelConfig) -> Int = { $0.moe?.sharedExpertIntermediateSize ?? 0 }

    /// The router: one row of logits weights per expert, on every rank.
    static func router(_ huggingFace: String) -> TensorEntry {
        TensorEntry(huggingFace: huggingFace, gguf: "blk.{layer}.ffn_gate_inp.weight",
                    shape: { [expertCount($0), $0.hiddenSize] }, split: .replicated, isInLayer: isSparseLayer)
    }

    /// An expert's gate and up projections (column-parallel) and its down
    /// projection (row-parallel) along the expert's intermediate range.
    static func experts(gate: String, up: String, down: String) -> [TensorEntry] {
        [TensorEntry(huggingFace: gate, gguf: "blk.{layer}.ffn_gate_exps.weight",
                     shape: { [expertRows($0), $0.hiddenSize] }, split: .columnParallel(.expertIntermediate), isInLayer: isSparseLayer),
         TensorEntry(huggingFace: up, gguf: "blk.{layer}.ffn_up_exps.weight",
                     shape: { [expertRows($0), $0.hiddenSize] }, split: .columnParallel(.expertIntermediate), isInLayer: isSparseLayer),
         TensorEntry(huggingFace: down, gguf: "blk.{layer}.ffn_down_exps.weight",
                     shape: { [$0.hiddenSize, expertRows($0)] }, split: .rowParallel(.expertIntermediate), isInLayer: isSparseLayer)]
    }

    /// Qwen3's per-head RMSNorm weights of q and k (before RoPE).
    static let qNorm = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.q_norm.weight", gguf: "blk.{layer}.attn_q_norm.weight",
        shape: { [$0.headDim] }, split: .replicated, isPresent: { $0.qkNorm })
    static let kNorm = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.k_norm.weight", gguf: "blk.{layer}.attn_k_norm.weight",
        shape: { [$0.headDim] }, split: .replicated, isPresent: { $0.qkNorm })
}

/// The roles of a sparse layer's tensors, which the loader assembles into
/// the router, the experts and the shared expert.
public struct MoEEntrySet: Sendable {
    public let router: TensorEntry
    public let gate: TensorEntry
    public let up: TensorEntry
    public let down: TensorEntry
    /// Qwen2-MoE's shared expert (gate, up, down) and its sigmoid gate.
    public let shared: SharedExpertEntries?
}

/// Qwen2-MoE's shared expert: a SwiGLU MLP every token goes through, scaled
/// by sigmoid(`sigmoidGate` · x).
public struct SharedExpertEntries: Sendable {
    public let gate: TensorEntry
    public let up: TensorEntry
    public let down: TensorEntry
    public let sigmoidGate: TensorEntry
}

/// Mixtral: Mistral's attention, every layer sparse, top-k weights
/// renormalized. GGUF: architecture `llama` with `llama.expert_count`.
public enum MixtralArchitecture {
    static let moe: [TensorEntry] = MoEEntries.experts(
        gate: "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight",
        up: "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight",
        down: "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight")
    public static let entries = MoEEntrySet(
        router: MoEEntries.router("model.layers.{layer}.block_sparse_moe.gate.weight"),
        gate: moe[0], up: moe[1], down: moe[2], shared: nil)
    public static let table = ArchitectureTable(
        name: "mixtral", entries: LlamaArchitecture.attentionEntries + [entries.router] + moe)
}

/// Qwen2-MoE: Qwen2's attention (q/k/v biases); sparse layers add a shared
/// expert scaled by sigmoid(shared_expert_gate · x); `decoder_sparse_step`
/// and `mlp_only_layers` keep some layers dense. GGUF: `qwen2moe`.
public enum Qwen2MoEArchitecture {
    static let moe: [TensorEntry] = MoEEntries.experts(
        gate: "model.layers.{layer}.mlp.experts.{expert}.gate_proj.weight",
        up: "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight",
        down: "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight")
    static let hasShared: @Sendable (ModelConfig) -> Bool = { MoEEntries.sharedRows($0) > 0 }
    public static let sharedGate = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.shared_expert.gate_proj.weight", gguf: "blk.{layer}.ffn_gate_shexp.weight",
        shape: { [MoEEntries.sharedRows($0), $0.hiddenSize] }, split: .columnParallel(.sharedExpertIntermediate),
        isPresent: hasShared, isInLayer: MoEEntries.isSparseLayer)
    public static let sharedUp = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.shared_expert.up_proj.weight", gguf: "blk.{layer}.ffn_up_shexp.weight",
        shape: { [MoEEntries.sharedRows($0), $0.hiddenSize] }, split: .columnParallel(.sharedExpertIntermediate),
        isPresent: hasShared, isInLayer: MoEEntries.isSparseLayer)
    public static let sharedDown = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.shared_expert.down_proj.weight", gguf: "blk.{layer}.ffn_down_shexp.weight",
        shape: { [$0.hiddenSize, MoEEntries.sharedRows($0)] }, split: .rowParallel(.sharedExpertIntermediate),
        isPresent: hasShared, isInLayer: MoEEntries.isSparseLayer)
    /// One row: the shared expert's gate logit is its dot product with x.
    public static let sharedExpertGate = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.shared_expert_gate.weight", gguf: "blk.{layer}.ffn_gate_inp_shexp.weight",
        shape: { [1, $0.hiddenSize] }, split: .replicated, isPresent: hasShared, isInLayer: MoEEntries.isSparseLayer)
    public static let entries = MoEEntrySet(
        router: MoEEntries.router("model.layers.{layer}.mlp.gate.weight"),
        gate: moe[0], up: moe[1], down: moe[2], shared: SharedExpertEntries(gate: sharedGate, up: sharedUp, down: sharedDown, sigmoidGate: sharedExpertGate))
    public static let table = ArchitectureTable(
        name: "qwen2moe",
        entries: LlamaArchitecture.table.entries + [entries.router] + moe + [sharedGate, sharedUp, sharedDown, sharedExpertGate])
}

/// Qwen3-MoE: attention without biases but with per-head q/k RMSNorm, an
/// explicit head_dim, no shared expert. GGUF: `qwen3moe`.
public enum Qwen3MoEArchitecture {
    /// Named as Qwen2-MoE names its router and experts.
    static let moe = Qwen2MoEArchitecture.moe
    public static let entries = MoEEntrySet(
        router: Qwen2MoEArchitecture.entries.router, gate: moe[0], up: moe[1], down: moe[2], shared: nil)
    public static let table = ArchitectureTable(
        name: "qwen3moe",
        entries: LlamaArchitecture.table.entries + [MoEEntries.qNorm, MoEEntries.kNorm, entries.router] + moe)
}

// MARK: - Configuration keys

extension ModelConfig.Architecture {
    /// The experts of this family as config.json describes them; nil for a dense family.
    /// Ranges are `ModelConfig.validate`'s job.
    func experts(_ fields: JSONFields) throws -> ModelConfig.MixtureOfExperts? {
        switch self {
        case .mixtral:
            // Mixtral's experts are `intermediate_size` wide; every layer is sparse.
            return .init(expertCount: try fields.require("num_local_experts"),
                         expertsPerToken: try fields.require("num_experts_per_tok"),
                         expertIntermediateSize: try fields.require("intermediate_size"), normalizeTopK: true)
        case .qwen2Moe, .qwen3Moe:
            // Qwen's experts are `moe_intermediate_size` wide; `intermediate_size` is the dense layers' MLP.
            return .init(expertCount: try fields.require("num_experts"),
                         expertsPerToken: try fields.require("num_experts_per_tok"),
                         expertIntermediateSize: try fields.require("moe_intermediate_size"),
                         normalizeTopK: try fields.optional("norm_topk_prob") ?? false,
                         sharedExpertIntermediateSize: self == .qwen2Moe ? try fields.optional("shared_expert_intermediate_size") ?? 0 : 0,
                         sparseStep: try fields.optional("decoder_sparse_step") ?? 1,
                         denseLayers: try fields.optional("mlp_only_layers") ?? [])
        case .llama, .mistral, .qwen2:
            return nil
        }
    }

    /// The experts of this family as a GGUF file's `PREFIX.*` keys describe
    /// them (llama.cpp's names; every layer sparse, as llama.cpp runs them).
    /// llama.cpp renormalizes the top-k weights of `llama` (Mixtral) and
    /// `qwen3moe` and not of `qwen2moe`, whatever the original config said,
    /// unless the file carries `PREFIX.expert_weights_norm`.
    func experts(gguf h: GGUFHeader, prefix: String, path: String) throws -> ModelConfig.MixtureOfExperts? {
        guard self == .mixtral || self == .qwen2Moe || self == .qwen3Moe else { return nil }
        func required(_ key: String) throws -> Int {
            guard let v = try h.int("\(prefix).\(key)") else { throw ModelError.field(path, "\(prefix).\(key)", "an integer", "missing") }
            return v
        }
        return .init(expertCount: try required("expert_count"), expertsPerToken: try required("expert_used_count"),
                     expertIntermediateSize: try required(self == .mixtral ? "feed_forward_length" : "expert_feed_forward_length"),
                     normalizeTopK: try h.bool("\(prefix).expert_weights_norm") ?? (self != .qwen2Moe),
                     sharedExpertIntermediateSize: self == .qwen2Moe ? try h.int("\(prefix).expert_shared_feed_forward_length") ?? 0 : 0)
    }
}

extension ModelConfig {
    /// The roles of a sparse layer's tensors in this configuration's
    /// architecture; nil for a dense model.
    public var moeEntries: MoEEntrySet? {
        switch architecture {
        case .mixtral: MixtralArchitecture.entries
        case .qwen2Moe: Qwen2MoEArchitecture.entries
        case .qwen3Moe: Qwen3MoEArchitecture.entries
        case .llama, .mistral, .qwen2: nil
        }
    }
    /// Qwen3's q/k norm entries.
    public var qkNormEntries: (q: TensorEntry, k: TensorEntry) { (MoEEntries.qNorm, MoEEntries.kNorm) }
}
