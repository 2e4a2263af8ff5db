/// The dimension of the tensor-parallel plan a sharded tensor is cut along.
public enum ShardedDimension: Sendable, Equatable {
    /// Query heads (`plan.heads`, `headDim` rows or columns each).
    case queryHeads
    /// KV heads (`plan.kvHeads`, `headDim` rows each).
    case kvHeads
    /// The MLP's intermediate range (`plan.intermediate`).
    case intermediate
    /// Each routed expert's intermediate range (`plan.expertIntermediate`:
    /// a slice of every expert with tensor-parallel experts, all of it with
    /// expert parallelism, where a rank holds whole experts).
    case expertIntermediate
    /// The shared expert's intermediate range (`plan.sharedExpertIntermediate`).
    case sharedExpertIntermediate
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
/// Per-layer names hold `{layer}` where the layer's index goes; a routed
/// expert's Hugging Face name also holds `{expert}`, while GGUF stacks every
/// expert of a layer in one 3-D tensor ([experts, rows, columns]) whose name
/// has no expert.
public struct TensorEntry: Sendable {
    public static let layerPlaceholder = "{layer}"
    public static let expertPlaceholder = "{expert}"

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
    /// False in the layers the configuration leaves the tensor out of (the
    /// dense MLP of a sparse layer, the experts of a dense one).
    public let isInLayer: @Sendable (ModelConfig, Int) -> Bool

    public init(huggingFace: String, gguf: String, shape: @escaping @Sendable (ModelConfig) -> [Int], split: TensorSplit,
                isPresent: @escaping @Sendable (ModelConfig) -> Bool = { _ in true },
                isInLayer: @escaping @Sendable (ModelConfig, Int) -> Bool = { _, _ in true },
                ggufPermutedHeads: @escaping @Sendable (ModelConfig) -> Int? = { _ in nil }) {
        self.huggingFace = huggingFace
        self.gguf = gguf
        self.shape = shape
        self.split = split
        self.isPresent = isPresent
        self.isInLayer = isInLayer
        self.ggufPermutedHeads = ggufPermutedHeads
    }

    /// Whether the tensor exists once per layer.
    public var isPerLayer: Bool { huggingFace.contains(Self.layerPlaceholder) }
    /// Whether the tensor exists once per routed expert (stacked in GGUF).
    public var isPerExpert: Bool { huggingFace.contains(Self.expertPlaceholder) }

    public func huggingFaceName(layer: Int? = nil, expert: Int? = nil) -> String { Self.fill(huggingFace, layer, expert) }
    /// The GGUF name (of the stacked tensor holding every expert, for a per-expert entry).
    public func ggufName(layer: Int? = nil) -> String { Self.fill(gguf, layer, nil) }

    /// The layer of `name` if it is this tensor's Hugging Face name (nil
    /// inside for a tensor outside the layers); nil if it is not.
    public func match(huggingFace name: String) -> Int?? { Self.match(name, huggingFace).map(\.layer) }
    /// The layer and expert of `name` if it is this tensor's Hugging Face name.
    public func matchExpert(huggingFace name: String) -> (layer: Int?, expert: Int?)? { Self.match(name, huggingFace) }
    /// The same for a GGUF name.
    public func match(gguf name: String) -> Int?? { Self.match(name, gguf).map(\.layer) }

    static func fill(_ pattern: String, _ layer: Int?, _ expert: Int?) -> String {
        var name = pattern
        if let layer { name = name.replacingOccurrences(of: layerPlaceholder, with: String(layer)) }
        if let expert { name = name.replacingOccurrences(of: expertPlaceholder, with: String(expert)) }
        return name
    }

    /// Matches `name` against `pattern`, whose placeholders stand for
    /// decimal numbers without leading zeros.
    static func match(_ name: String, _ pattern: String) -> (layer: Int?, expert: Int?)? {
        var layer: Int?, expert: Int?
        var rest = Substring(name), remaining = Substring(pattern)
        while true {
            let next = [layerPlaceholder, expertPlaceholder].compactMap { p in remaining.range(of: p).map { (p, $0) } }
                .min { $0.1.lowerBound < $1.1.lowerBound }
            guard let (placeholder, range) = next else { return rest == remaining ? (layer, expert) : nil }
            let literal = remaining[..<range.lowerBound]
            guard rest.hasPrefix(literal) else { return nil }
            rest = rest.dropFirst(literal.count)
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, digits.count <= 9, let value = Int(digits), String(value) == digits else { return nil }
            if placeholder == layerPlaceholder { layer = value } else { expert = value }
            rest = rest.dropFirst(digits.count)
            remaining = remaining[range.upperBound...]
        }
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

    /// One tensor a configuration needs.
    public struct Tensor: Sendable {
        /// The Hugging Face name.
        public let name: String
        public let entry: TensorEntry
        public let layer: Int?
        /// The routed expert, for a per-expert entry.
        public let expert: Int?
    }

    /// Every tensor `config` needs, in validation order: those outside the
    /// layers, then layer 0's, layer 1's, ... (a per-expert entry once for
    /// each expert, in expert order).
    public func tensors(_ config: ModelConfig) -> [Tensor] {
        let present = entries.filter { $0.isPresent(config) }
        var all = present.filter { !$0.isPerLayer }.map { Tensor(name: $0.huggingFaceName(), entry: $0, layer: nil, expert: nil) }
        for i in 0..<config.layerCount {
            for entry in present where entry.isPerLayer && entry.isInLayer(config, i) {
                if entry.isPerExpert {
                    for e in 0..<(config.moe?.expertCount ?? 0) {
                        all.append(Tensor(name: entry.huggingFaceName(layer: i, expert: e), entry: entry, layer: i, expert: e))
                    }
                } else {
                    all.append(Tensor(name: entry.huggingFaceName(layer: i), entry: entry, layer: i, expert: nil))
                }
            }
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

    /// The GGUF name of Hugging Face tensor `name`, nil if no entry names it
    /// (for a routed expert's tensor: the stacked tensor of its layer).
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
        case .mixtral: MixtralArchitecture.table
        case .qwen2Moe: Qwen2MoEArchitecture.table
        case .qwen3Moe: Qwen3MoEArchitecture.table
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
        case .expertIntermediate: expertIntermediate
        case .sharedExpertIntermediate: sharedExpertIntermediate
        }
    }
}

/// The Llama family (Llama, Mistral, Qwen2): pre-norm decoder layers of
/// grouped-query attention (optional q/k/v biases) and a SwiGLU MLP.
public enum LlamaArchitecture {
    static func qRows(_ c: ModelConfig) -> Int { c.headCount * c.headDim }
    static func kvRows(_ c: ModelConfig) -> Int { c.kvHeadCount * c.headDim }
    /// llama.cpp permutes q/k rows of `llama` models only (Llama, Mistral,
    /// Mixtral), not of the Qwen families.
    static func permuted(_ heads: @escaping @Sendable (ModelConfig) -> Int) -> @Sendable (ModelConfig) -> Int? {
        { [.llama, .mistral, .mixtral].contains($0.architecture) ? heads($0) : nil }
    }
    /// The dense MLP is in every layer of a dense model and in a sparse model's dense layers.
    static let isDenseLayer: @Sendable (ModelConfig, Int) -> Bool = { !$0.isSparse(layer: $1) }
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
        shape: { [$0.intermediateSize, $0.hiddenSize] }, split: .columnParallel(.intermediate), isInLayer: isDenseLayer)
    public static let upProj = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.up_proj.weight", gguf: "blk.{layer}.ffn_up.weight",
        shape: { [$0.intermediateSize, $0.hiddenSize] }, split: .columnParallel(.intermediate), isInLayer: isDenseLayer)
    public static let downProj = TensorEntry(
        huggingFace: "model.layers.{layer}.mlp.down_proj.weight", gguf: "blk.{layer}.ffn_down.weight",
        shape: { [$0.hiddenSize, $0.intermediateSize] }, split: .rowParallel(.intermediate), isInLayer: isDenseLayer)

    /// In validation order (as before the table: embedding, LM head, final
    /// norm, then per layer norms, q/k/v/o, biases, MLP).
    public static let table = ArchitectureTable(name: "llama", entries: attentionEntries + [gateProj, upProj, downProj])
    /// Everything but the feed-forward, which the mixture-of-experts families replace.
    public static let attentionEntries = [
        embedding, lmHead, finalNorm,
        inputNorm, postAttentionNorm, qProj, kProj, vProj, oProj, qBias, kBias, vBias,
    ]
}
