/// The dimension of the tensor-parallel plan a sharded tensor is cut along.
public enum ShardedDimension: Sendable, Equatable {
    /// Query heads (`plan.heads`, `headDim` rows or columns each).
    case queryHeads
    /// KV heads (`plan.kvHeads`, `headDim` rows each).
    case kvHeads
    /// The MLP's intermediate range (`plan.intermediate`).
    case intermediate
}

/// How a tensor is shared across tensor-parallel ranks (Megatron's terms,
/// shapes in Hugging Face order [output rows, input columns]).
public enum TensorSplit: Sendable, Equatable {
    /// Output rows split: each rank holds the rows of its range of the
    /// dimension (q/k/v and their biases, gate/up).
    case columnParallel(ShardedDimension)
    /// Input columns split: each rank holds every row but only the columns
    /// of its range, and its products are partial sums (o, down).
    case rowParallel(ShardedDimension)
    /// Rows split by the rank's vocabulary range (embedding, LM head).
    case vocabularyParallel
    /// Every rank holds the whole tensor (norm weights).
    case replicated
}

/// One tensor of an architecture: its names in Hugging Face checkpoints and
/// in GGUF files, its shape from the configuration, and how it is split.
/// Per-layer names hold `{layer}` where the layer's index goes.
public struct TensorEntry: Sendable {
    public static let layerPlaceholder = "{layer}"

    /// The Hugging Face (safetensors) name, e.g. `model.layers.{layer}.self_attn.q_proj.weight`.
    public let huggingFace: String
    /// The GGUF name as llama.cpp writes it, e.g. `blk.{layer}.attn_q.weight`.
    public let gguf: String
    /// The shape in Hugging Face order ([rows, columns] or [elements]).
    public let shape: @Sendable (ModelConfig) -> [Int]
    public let split: TensorSplit
    /// False when the configuration leaves the tensor out (biases of models
    /// without them, the LM head of tied embeddings).
    public let isPresent: @Sendable (ModelConfig) -> Bool
    /// The head count whose rows llama.cpp's converter reordered in the GGUF
    /// file (q/k of `llama` models, for its interleaved RoPE); nil: stored in
    /// Hugging Face order.
    public let ggufPermutedHeads: @Sendable (ModelConfig) -> Int?

    public init(huggingFace: String, gguf: String, shape: @escaping @Sendable (ModelConfig) -> [Int], split: TensorSplit,
                isPresent: @escaping @Sendable (ModelConfig) -> Bool = { _ in true },
                ggufPermutedHeads: @escaping @Sendable (ModelConfig) -> Int? = { _ in nil }) {
        self.huggingFace = huggingFace
        self.gguf = gguf
        self.shape = shape
        self.split = split
        self.isPresent = isPresent
        self.ggufPermutedHeads = ggufPermutedHeads
    }

    /// Whether the tensor exists once per layer.
    public var isPerLayer: Bool { huggingFace.contains(Self.layerPlaceholder) }

    public func huggingFaceName(layer: Int? = nil) -> String { Self.fill(huggingFace, layer) }
    public func ggufName(layer: Int? = nil) -> String { Self.fill(gguf, layer) }

    /// The layer of `name` if it is this tensor's Hugging Face name (nil
    /// inside for a tensor outside the layers); nil if it is not.
    public func match(huggingFace name: String) -> Int?? { Self.match(name, huggingFace) }
    /// The same for a GGUF name.
    public func match(gguf name: String) -> Int?? { Self.match(name, gguf) }

    static func fill(_ pattern: String, _ layer: Int?) -> String {
        guard let layer else { return pattern }
        return pattern.replacingOccurrences(of: layerPlaceholder, with: String(layer))
    }

    static func match(_ name: String, _ pattern: String) -> Int?? {
        guard let placeholder = pattern.range(of: layerPlaceholder) else {
            return name == pattern ? .some(nil) : nil
        }
        let prefix = pattern[..<placeholder.lowerBound], suffix = pattern[placeholder.upperBound...]
        guard name.count > prefix.count + suffix.count, name.hasPrefix(prefix), name.hasSuffix(suffix) else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.allSatisfy(\.isASCII), let layer = Int(digits), String(layer) == digits else { return nil }
        return .some(layer)
    }
}

/// An architecture's tensor table: the one list that validation, loading
/// and the GGUF name mapping read. Tensors outside the layers come first,
/// then each layer's, each group in the order they are validated.
public struct ArchitectureTable: Sendable {
    public let name: String
    public let entries: [TensorEntry]

    public init(name: String, entries: [TensorEntry]) {
        self.name = name
        self.entries = entries
    }

    /// Every tensor `config` needs, in validation order: those outside the
    /// layers, then layer 0's, layer 1's, ...
    public func tensors(_ config: ModelConfig) -> [(name: String, entry: TensorEntry, layer: Int?)] {
        let present = entries.filter { $0.isPresent(config) }
        var all = present.filter { !$0.isPerLayer }.map { (name: $0.huggingFaceName(), entry: $0, layer: Int?.none) }
        for i in 0..<config.layerCount {
            all += present.filter(\.isPerLayer).map { (name: $0.huggingFaceName(layer: i), entry: $0, layer: Int?.some(i)) }
        }
        return all
    }

    /// The entries naming Hugging Face tensor `name` (one in a sound table), with the layer.
    public func entries(huggingFace name: String) -> [(entry: TensorEntry, layer: Int?)] {
        entries.compactMap { entry in entry.match(huggingFace: name).map { (entry: entry, layer: $0) } }
    }

    /// The entries naming GGUF tensor `name`, with the layer.
    public func entries(gguf name: String) -> [(entry: TensorEntry, layer: Int?)] {
        entries.compactMap { entry in entry.match(gguf: name).map { (entry: entry, layer: $0) } }
    }

    /// The GGUF name of Hugging Face tensor `name`, nil if no entry names it.
    public func ggufName(_ name: String) -> String? {
        entries(huggingFace: name).first.map { $0.entry.ggufName(layer: $0.layer) }
    }

    /// The Hugging Face name of GGUF tensor `name`, nil if no entry names it.
    public func huggingFaceName(gguf name: String) -> String? {
        entries(gguf: name).first.map { $0.entry.huggingFaceName(layer: $0.layer) }
    }

    /// The table of `architecture`.
    public static func of(_ architecture: ModelConfig.Architecture) -> ArchitectureTable {
        switch architecture {
        case .llama, .mistral, .qwen2: LlamaArchitecture.table
        }
    }
}

extension ModelConfig {
    /// The tensor table of this configuration's architecture.
    public var tensorTable: ArchitectureTable { ArchitectureTable.of(architecture) }
}

extension TensorParallelPlan {
    /// This rank's range of `dimension`, in rows or columns of the tensors cut along it.
    public func range(of dimension: ShardedDimension, headDim: Int) -> Range<Int> {
        switch dimension {
        case .queryHeads: heads.lowerBound * headDim ..< heads.upperBound * headDim
        case .kvHeads: kvHeads.lowerBound * headDim ..< kvHeads.upperBound * headDim
        case .intermediate: intermediate
        }
    }
}

/// The Llama family (Llama, Mistral, Qwen2): pre-norm decoder layers of
/// grouped-query attention (optional q/k/v biases) and a SwiGLU MLP.
public enum LlamaArchitecture {
    static func qRows(_ c: ModelConfig) -> Int { c.headCount * c.headDim }
    static func kvRows(_ c: ModelConfig) -> Int { c.kvHeadCount * c.headDim }
    /// llama.cpp permutes q/k rows of `llama` models only (not `qwen2`).
    static func permuted(_ heads: @escaping @Sendable (ModelConfig) -> Int) -> @Sendable (ModelConfig) -> Int? {
        { $0.architecture == .qwen2 ? nil : heads($0) }
    }
    static let hasBias: @Sendable (ModelConfig) -> Bool = { $0.attentionBias }

    public static let embedding = TensorEntry(
        huggingFace: "model.embed_tokens.weight", gguf: "token_embd.weight",
        shape: { [$0.vocabularySize, $0.hiddenSize] }, split: .vocabularyParallel)
    /// Absent with tied embeddings: the embedding's rows are the LM head.
    public static let lmHead = TensorEntry(
        huggingFace: "lm_head.weight", gguf: "output.weight",
        shape: { [$0.vocabularySize, $0.hiddenSize] }, split: .vocabularyParallel, isPresent: { !$0.tieWordEmbeddings })
    public static let finalNorm = TensorEntry(
        huggingFace: "model.norm.weight", gguf: "output_norm.weight", shape: { [$0.hiddenSize] }, split: .replicated)
    public static let inputNorm = TensorEntry(
        huggingFace: "model.layers.{layer}.input_layernorm.weight", gguf: "blk.{layer}.attn_norm.weight",
        shape: { [$0.hiddenSize] }, split: .replicated)
    public static let postAttentionNorm = TensorEntry(
        huggingFace: "model.layers.{layer}.post_attention_layernorm.weight", gguf: "blk.{layer}.ffn_norm.weight",
        shape: { [$0.hiddenSize] }, split: .replicated)
    public static let qProj = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.q_proj.weight", gguf: "blk.{layer}.attn_q.weight",
        shape: { [qRows($0), $0.hiddenSize] }, split: .columnParallel(.queryHeads), ggufPermutedHeads: permuted { $0.headCount })
    public static let kProj = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.k_proj.weight", gguf: "blk.{layer}.attn_k.weight",
        shape: { [kvRows($0), $0.hiddenSize] }, split: .columnParallel(.kvHeads), ggufPermutedHeads: permuted { $0.kvHeadCount })
    public static let vProj = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.v_proj.weight", gguf: "blk.{layer}.attn_v.weight",
        shape: { [kvRows($0), $0.hiddenSize] }, split: .columnParallel(.kvHeads))
    public static let oProj = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.o_proj.weight", gguf: "blk.{layer}.attn_output.weight",
        shape: { [$0.hiddenSize, qRows($0)] }, split: .rowParallel(.queryHeads))
    public static let qBias = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.q_proj.bias", gguf: "blk.{layer}.attn_q.bias",
        shape: { [qRows($0)] }, split: .columnParallel(.queryHeads), isPresent: hasBias, ggufPermutedHeads: permuted { $0.headCount })
    public static let kBias = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.k_proj.bias", gguf: "blk.{layer}.attn_k.bias",
        shape: { [kvRows($0)] }, split: .columnParallel(.kvHeads), isPresent: hasBias, ggufPermutedHeads: permuted { $0.kvHeadCount })
    public static let vBias = TensorEntry(
        huggingFace: "model.layers.{layer}.self_attn.v_proj.bias", gguf: "blk.{layer}.attn_v.bias",
        shape: { [kvRows($0)] }, split: .columnParallel(.kvHeads), isPresent: hasBias)
    public static let gateProj = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.gate_proj.weight", gguf: "blk.{layer}.ffn_gate.weight",
        shape: { [$0.intermediateSize, $0.hiddenSize] }, split: .columnParallel(.intermediate))
    public static let upProj = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.up_proj.weight", gguf: "blk.{layer}.ffn_up.weight",
        shape: { [$0.intermediateSize, $0.hiddenSize] }, split: .columnParallel(.intermediate))
    public static let downProj = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.down_proj.weight", gguf: "blk.{layer}.ffn_down.weight",
        shape: { [$0.hiddenSize, $0.intermediateSize] }, split: .rowParallel(.intermediate))

    /// In validation order (as before the table: embedding, LM head, final
    /// norm, then per layer norms, q/k/v/o, biases, MLP).
    public static let table = ArchitectureTable(name: "llama", entries: [
        embedding, lmHead, finalNorm,
        inputNorm, postAttentionNorm, qProj, kProj, vProj, oProj, qBias, kBias, vBias, gateProj, upProj, downProj,
    ])
}
