import Foundation

/// The architecture hyper-parameters of a decoder model (the Llama family
/// and its mixture-of-experts relatives), read from a Hugging Face
/// `config.json` or a GGUF file's metadata.
public struct ModelConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable, CaseIterable {
        case llama = "LlamaForCausalLM"
        case mistral = "MistralForCausalLM"
        case qwen2 = "Qwen2ForCausalLM"
        case mixtral = "MixtralForCausalLM"
        case qwen2Moe = "Qwen2MoeForCausalLM"
        case qwen3Moe = "Qwen3MoeForCausalLM"
    }

    /// Mixture-of-experts feed-forward layers: a router picks
    /// `expertsPerToken` of `expertCount` SwiGLU experts for each token.
    public struct MixtureOfExperts: Sendable, Equatable {
        public var expertCount: Int
        public var expertsPerToken: Int
        /// Each expert's intermediate size (Mixtral's `intermediate_size`,
        /// Qwen's `moe_intermediate_size`).
        public var expertIntermediateSize: Int
        /// The chosen experts' softmax weights are renormalized to sum to 1
        /// (Mixtral always; Qwen's `norm_topk_prob`).
        public var normalizeTopK: Bool
        /// A shared expert every token goes through, scaled by a sigmoid gate
        /// (Qwen2-MoE's `shared_expert_intermediate_size`); 0: none.
        public var sharedExpertIntermediateSize: Int
        /// Every `sparseStep`-th layer is sparse (`decoder_sparse_step`) ...
        public var sparseStep: Int
        /// ... except these, which keep a dense MLP of `intermediate_size` (`mlp_only_layers`).
        public var denseLayers: [Int]

        public init(expertCount: Int, expertsPerToken: Int, expertIntermediateSize: Int, normalizeTopK: Bool,
                    sharedExpertIntermediateSize: Int = 0, sparseStep: Int = 1, denseLayers: [Int] = []) {
            self.expertCount = expertCount
            self.expertsPerToken = expertsPerToken
            self.expertIntermediateSize = expertIntermediateSize
            self.normalizeTopK = normalizeTopK
            self.sharedExpertIntermediateSize = sharedExpertIntermediateSize
            self.sparseStep = sparseStep
            self.denseLayers = denseLayers
        }

        /// Whether layer `layer` has experts (Hugging Face's rule).
        public func isSparse(layer: Int) -> Bool {
            !denseLayers.contains(layer) && (layer + 1) % max(sparseStep, 1) == 0
        }
    }

    /// `rope_scaling` of type `llama3` (Llama 3.1 and later).
    public struct Llama3RopeScaling: Sendable, Equatable {
        public var factor: Double
        public var lowFreqFactor: Double
        public var highFreqFactor: Double
        public var originalMaxPositionEmbeddings: Int
    }

    public var architecture: Architecture
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var vocabularySize: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var ropeScaling: Llama3RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// q/k/v projections carry biases (Qwen2, or `attention_bias` true).
    public var attentionBias: Bool
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]
    /// Per-frequency divisors of the RoPE inverse frequencies, as GGUF files
    /// store Llama 3's scaling (`rope_freqs.weight`); nil: none.
    public var ropeFrequencyFactors: [Float]?
    /// Experts in place of the dense MLP (in the layers `isSparse` names); nil: a dense model.
    public var moe: MixtureOfExperts?
    /// q and k are RMS-normalized per head before RoPE (Qwen3).
    public var qkNorm: Bool

    /// Whether layer `layer`'s feed-forward is a mixture of experts.
    public func isSparse(layer: Int) -> Bool { moe?.isSparse(layer: layer) ?? false }

    public init(architecture: Architecture, hiddenSize: Int, intermediateSize: Int, layerCount: Int,
                headCount: Int, kvHeadCount: Int, headDim: Int? = nil, vocabularySize: Int,
                rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, ropeScaling: Llama3RopeScaling? = nil,
                maxPositionEmbeddings: Int = 4096, tieWordEmbeddings: Bool = false,
                attentionBias: Bool? = nil, bosTokenID: Int? = nil, eosTokenIDs: [Int] = [],
                moe: MixtureOfExperts? = nil, qkNorm: Bool? = nil) {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim ?? hiddenSize / max(headCount, 1)
        self.vocabularySize = vocabularySize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias ?? (architecture == .qwen2 || architecture == .qwen2Moe)
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
        self.moe = moe
        self.qkNorm = qkNorm ?? (architecture == .qwen3Moe)
    }

    /// Parameters of the model (embedding and LM head counted once each);
    /// Int.max if the count overflows (`validate` refuses such configs).
    public var parameterCount: Int { checkedParameterCount ?? .max }

    /// RoPE inverse frequencies (head_dim/2 of them), with Llama 3 scaling
    /// applied as Hugging Face's `_compute_llama3_parameters` does.
    public func ropeInverseFrequencies() -> [Float] {
        let half = headDim / 2
        var inv = (0..<half).map { i -> Double in
            // HF computes base ** (arange(0, dim, 2).float() / dim) in float32.
            let exponent = Float(2 * i) / Float(headDim)
            return Double(1.0 / Float(pow(Double(ropeTheta), Double(exponent))))
        }
        if let s = ropeScaling {
            let lowWavelen = Double(s.originalMaxPositionEmbeddings) / s.lowFreqFactor
            let highWavelen = Double(s.originalMaxPositionEmbeddings) / s.highFreqFactor
            inv = inv.map { freq in
                let wavelen = 2 * Double.pi / freq
                if wavelen < highWavelen { return freq }
                if wavelen > lowWavelen { return freq / s.factor }
                let smooth = (Double(s.originalMaxPositionEmbeddings) / wavelen - s.lowFreqFactor)
                    / (s.highFreqFactor - s.lowFreqFactor)
                return (1 - smooth) * freq / s.factor + smooth * freq
            }
        }
        if let factors = ropeFrequencyFactors, factors.count == half {
            // llama.cpp: theta = position * base^(-2i/d) / factor[i].
            return zip(inv, factors).map { Float($0) / $1 }
        }
        return inv.map { Float($0) }
    }
}

// MARK: - Reading config.json

extension ModelConfig {
    /// Upper bounds on config.json numbers. Each is far above every released
    /// Llama-family model yet small enough that every size computed from the
    /// config (weights, KV cache per position, RoPE tables, Int32 values passed
    /// to the kernels) fits in Int, so a typo such as 10^18 is a field error
    /// instead of an overflow trap or an impossible allocation.
    public enum Limits {
        /// Llama 3.1 405B has 16384.
        public static let hiddenSize = 1 << 17
        /// Llama 3.1 405B has 53248.
        public static let intermediateSize = 1 << 20
        /// Llama 3.1 405B has 126.
        public static let layerCount = 1 << 12
        /// Llama 3.1 405B has 128 query heads (key/value heads are a divisor of it).
        public static let headCount = 1 << 12
        /// Released models use 64 to 256; the kernels take it as an Int32.
        public static let headDim = 1 << 12
        /// The largest vocabularies have about 2^18 entries; token ids are Int32.
        public static let vocabularySize = 1 << 24
        /// The longest released context is 10,485,760 (Llama 4 Scout) < 2^24;
        /// positions are Int32 and the KV cache is sized from this.
        public static let maxPositionEmbeddings = 1 << 24
        /// Released values run from 10^4 to 10^7 (Llama 3: 5·10^5, Qwen2.5: 10^6).
        public static let ropeTheta = 1e12
        /// Released values are 10^-6 to 10^-5; an epsilon near 1 makes no sense.
        public static let rmsNormEps = 1.0
        /// rope_scaling factors: Llama 3.1 uses 8, 1, 4; anything beyond 10^6 is a typo.
        public static let ropeScalingFactor = 1e6
        /// 2^42 ≈ 4.4 trillion parameters (Llama 3.1 405B has 2^38.6): keeps the
        /// float32 byte count (×4) and every per-rank share far from Int.max.
        public static let parameterCount = 1 << 42
        /// Experts per MoE layer: Qwen3-235B-A22B has 128, DeepSeek-V3 256.
        public static let expertCount = 1 << 12
        /// Routed experts in all layers (layers × experts), whose tensors are
        /// named one by one: DeepSeek-V3 has 61 × 256, Kimi K2 61 × 384,
        /// Qwen3-235B-A22B 94 × 128. Keeps a typo from listing 16M names.
        public static let expertLayers = 1 << 16
    }

    /// Reads and validates `DIR/config.json`.
    public static func load(directory: URL) throws -> ModelConfig {
        let url = directory.appendingPathComponent("config.json")
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError.file(url.path, "cannot read: \(ModelError.reason(error))")
        }
        return try parse(data, file: url.path)
    }

    /// Parses `config.json`: first every field's type (integers must be
    /// integral, numbers finite), then `validate(file:)` checks every range
    /// and relation before anything is computed from them.
    public static func parse(_ data: Data, file: String) throws -> ModelConfig {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError.file(file, "malformed JSON: \(ModelError.reason(error))")
        }
        guard let json = object as? [String: Any] else { throw ModelError.file(file, "expected a JSON object at the top level") }
        let fields = JSONFields(json, file: file)

        let architectures: [String] = try fields.require("architectures")
        guard let name = architectures.first else { throw ModelError.field(file, "architectures", "an array with one architecture name", "[]") }
        guard let architecture = Architecture(rawValue: name) else {
            throw ModelError.field(file, "architectures", "one of \(Architecture.allCases.map(\.rawValue).joined(separator: ", "))", "\"\(name)\" (unsupported architecture)")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw ModelError.field(file, "hidden_act", "\"silu\"", "\"\(act)\"")
        }
        var scaling: Llama3RopeScaling?
        if let rs = json["rope_scaling"], !(rs is NSNull) {
            guard let rsDict = rs as? [String: Any] else { throw ModelError.field(file, "rope_scaling", "an object or null", "\(rs)") }
            let sub = JSONFields(rsDict, file: file, prefix: "rope_scaling.")
            let type: String = try sub.optional("rope_type") ?? sub.require("type")
            guard type == "llama3" else {
                throw ModelError.field(file, "rope_scaling.rope_type", "\"llama3\" (or rope_scaling null)", "\"\(type)\"")
            }
            scaling = Llama3RopeScaling(
                factor: try sub.require("factor"),
                lowFreqFactor: try sub.require("low_freq_factor"),
                highFreqFactor: try sub.require("high_freq_factor"),
                originalMaxPositionEmbeddings: try sub.require("original_max_position_embeddings"))
        }
        var eos: [Int] = []
        if let raw = json["eos_token_id"], !(raw is NSNull) {
            if raw is [Any] { eos = try fields.require("eos_token_id") } else { eos = [try fields.require("eos_token_id")] }
        }
        let headDim: Int? = try fields.optional("head_dim")
        // The family's own keys (its file: MixtureOfExpertsArchitectures.swift).
        let moe = try architecture.experts(fields)
        let config = ModelConfig(
            architecture: architecture,
            hiddenSize: try fields.require("hidden_size"),
            intermediateSize: try fields.require("intermediate_size"),
            layerCount: try fields.require("num_hidden_layers"),
            headCount: try fields.require("num_attention_heads"),
            kvHeadCount: try fields.optional("num_key_value_heads") ?? fields.require("num_attention_heads"),
            headDim: headDim,
            vocabularySize: try fields.require("vocab_size"),
            rmsNormEps: try fields.optional("rms_norm_eps") ?? 1e-6,
            ropeTheta: try fields.optional("rope_theta") ?? 10000,
            ropeScaling: scaling,
            maxPositionEmbeddings: try fields.optional("max_position_embeddings") ?? 2048,
            tieWordEmbeddings: try fields.optional("tie_word_embeddings") ?? false,
            attentionBias: architecture == .qwen2 || architecture == .qwen2Moe ? true : (try fields.optional("attention_bias") ?? false),
            bosTokenID: try fields.optional("bos_token_id"),
            eosTokenIDs: eos,
            moe: moe)
        try config.validate(file: file)
        if headDim == nil, config.hiddenSize % config.headCount != 0 {
            throw ModelError.field(file, "hidden_size", "a multiple of num_attention_heads (\(config.headCount)) when head_dim is absent", "\(config.hiddenSize)")
        }
        return config
    }

    /// Checks every number against `Limits` and the relations between them,
    /// then the parameter count with checked arithmetic: the one place a
    /// config's numbers are validated (`parse` calls it; so may code that
    /// builds a config by hand). Errors name `file` and the config.json field.
    public func validate(file: String) throws {
        func check(_ field: String, _ value: Int, _ range: ClosedRange<Int>, _ note: String = "") throws {
            guard range.contains(value) else {
                throw ModelError.field(file, field, "an integer in \(range.lowerBound)...\(range.upperBound)\(note)", "\(value)")
            }
        }
        func check(_ field: String, _ value: Double, above lower: Double, atMost upper: Double) throws {
            guard value.isFinite, value > lower, value <= upper else {
                throw ModelError.field(file, field, "a finite number greater than \(lower) and at most \(upper)", "\(value)")
            }
        }
        try check("hidden_size", hiddenSize, 1...Limits.hiddenSize)
        try check("intermediate_size", intermediateSize, 1...Limits.intermediateSize)
        try check("num_hidden_layers", layerCount, 1...Limits.layerCount)
        try check("num_attention_heads", headCount, 1...Limits.headCount)
        try check("num_key_value_heads", kvHeadCount, 1...headCount, " (at most num_attention_heads)")
        guard headCount % kvHeadCount == 0 else {
            throw ModelError.field(file, "num_key_value_heads", "a divisor of num_attention_heads (\(headCount))", "\(kvHeadCount)")
        }
        try check("head_dim", headDim, 2...Limits.headDim)
        guard headDim % 2 == 0 else { throw ModelError.field(file, "head_dim", "an even number (RoPE rotates halves)", "\(headDim)") }
        try check("vocab_size", vocabularySize, 1...Limits.vocabularySize)
        try check("max_position_embeddings", maxPositionEmbeddings, 1...Limits.maxPositionEmbeddings)
        try check("rms_norm_eps", rmsNormEps, above: 0, atMost: Limits.rmsNormEps)
        try check("rope_theta", ropeTheta, above: 0, atMost: Limits.ropeTheta)
        if let s = ropeScaling {
            try check("rope_scaling.factor", s.factor, above: 0, atMost: Limits.ropeScalingFactor)
            try check("rope_scaling.low_freq_factor", s.lowFreqFactor, above: 0, atMost: Limits.ropeScalingFactor)
            try check("rope_scaling.high_freq_factor", s.highFreqFactor, above: 0, atMost: Limits.ropeScalingFactor)
            try check("rope_scaling.original_max_position_embeddings", s.originalMaxPositionEmbeddings, 1...Limits.maxPositionEmbeddings)
            guard s.highFreqFactor > s.lowFreqFactor else {
                throw ModelError.field(file, "rope_scaling.high_freq_factor", "greater than low_freq_factor (\(s.lowFreqFactor))", "\(s.highFreqFactor)")
            }
        }
        if let bos = bosTokenID { try check("bos_token_id", bos, 0...(vocabularySize - 1), " (below vocab_size)") }
        for id in eosTokenIDs { try check("eos_token_id", id, 0...(vocabularySize - 1), " (below vocab_size)") }
        if let moe {
            let expertField = architecture == .mixtral ? "num_local_experts" : "num_experts"
            try check(expertField, moe.expertCount, 1...Limits.expertCount)
            let (expertLayers, overflow) = layerCount.multipliedReportingOverflow(by: moe.expertCount)
            guard !overflow, expertLayers <= Limits.expertLayers else {
                throw ModelError.field(file, expertField, "at most \(Limits.expertLayers / layerCount) experts with \(layerCount) layers (\(Limits.expertLayers) expert layers in all)", "\(moe.expertCount)")
            }
            try check("num_experts_per_tok", moe.expertsPerToken, 1...moe.expertCount, " (at most the number of experts)")
            try check(architecture == .mixtral ? "intermediate_size" : "moe_intermediate_size", moe.expertIntermediateSize, 1...Limits.intermediateSize)
            try check("shared_expert_intermediate_size", moe.sharedExpertIntermediateSize, 0...Limits.intermediateSize)
            try check("decoder_sparse_step", moe.sparseStep, 1...layerCount, " (at most num_hidden_layers)")
            for layer in moe.denseLayers { try check("mlp_only_layers", layer, 0...(layerCount - 1), " (a layer index)") }
        }
        guard let count = checkedParameterCount, count <= Limits.parameterCount else {
            throw ModelError.file(file, "the shape (hidden_size \(hiddenSize), intermediate_size \(intermediateSize), num_hidden_layers \(layerCount), vocab_size \(vocabularySize), heads \(headCount)×\(headDim)) has more than \(Limits.parameterCount) parameters")
        }
    }

    /// `parameterCount` with overflow checks, nil if it does not fit in Int.
    var checkedParameterCount: Int? {
        var overflow = false
        func mul(_ values: Int...) -> Int {
            values.dropFirst().reduce(values[0]) { acc, v in
                let (r, o) = acc.multipliedReportingOverflow(by: v)
                overflow = overflow || o
                return r
            }
        }
        func add(_ values: Int...) -> Int {
            values.dropFirst().reduce(values[0]) { acc, v in
                let (r, o) = acc.addingReportingOverflow(v)
                overflow = overflow || o
                return r
            }
        }
        let heads = add(headCount, mul(2, kvHeadCount))
        let attention = add(mul(hiddenSize, headDim, heads), mul(headCount, headDim, hiddenSize))
        let bias = attentionBias ? mul(headDim, heads) : 0
        let norms = add(mul(2, hiddenSize), qkNorm ? mul(2, headDim) : 0)
        let dense = add(attention, bias, mul(3, hiddenSize, intermediateSize), norms)
        var layers = 0
        for layer in 0..<layerCount {
            guard let moe, moe.isSparse(layer: layer) else { layers = add(layers, dense); continue }
            let experts = mul(moe.expertCount, 3, hiddenSize, moe.expertIntermediateSize)
            let shared = moe.sharedExpertIntermediateSize > 0 ? add(mul(3, hiddenSize, moe.sharedExpertIntermediateSize), hiddenSize) : 0
            layers = add(layers, attention, bias, norms, mul(moe.expertCount, hiddenSize), experts, shared)
            if overflow { return nil }
        }
        let embeddings = mul(vocabularySize, hiddenSize, tieWordEmbeddings ? 1 : 2)
        let total = add(layers, embeddings, hiddenSize)
        return overflow ? nil : total
    }
}

/// Typed access to a JSON object's fields with errors that name the file and
/// field. Integers must be integral and fit in Int; numbers must be finite. Ranges are `ModelConfig.validate`'s job.
struct JSONFields {
    let json: [String: Any]
    let file: String
    var prefix = ""

    init(_ json: [String: Any], file: String, prefix: String = "") {
        self.json = json
        self.file = file
        self.prefix = prefix
    }

    func require<T>(_ key: String) throws -> T {
        guard let value: T = try optional(key) else {
            throw ModelError.field(file, prefix + key, "a value of type \(Self.typeName(T.self))", "missing")
        }
        return value
    }

    /// An integral, finite number strictly within ±2^63, as Int (exact for
    /// integers written as such; `ModelConfig.validate` checks the range).
    static func integer(_ raw: Any) -> Int? {
        guard !(raw is String), let n = raw as? NSNumber else { return nil }
        let d = n.doubleValue
        // Double(Int64.max) rounds up to 2^63, hence the strict bound before converting.
        guard d.isFinite, d == d.rounded(), d > -9_223_372_036_854_775_808.0, d < 9_223_372_036_854_775_808.0 else { return nil }
        let exact = n.int64Value
        return Double(exact) == d ? Int(exact) : Int(d)
    }

    func optional<T>(_ key: String) throws -> T? {
        guard let raw = json[key], !(raw is NSNull) else { return nil }
        let converted: Any?
        switch T.self {
        case is Int.Type:
            // Integral numbers only: 2048.5 is not a size.
            converted = Self.integer(raw)
        case is Double.Type:
            converted = (raw is String) ? nil : (raw as? NSNumber).map(\.doubleValue).flatMap { $0.isFinite ? $0 : nil }
        case is Bool.Type:
            converted = raw as? Bool
        case is String.Type:
            converted = raw as? String
        case is [String].Type:
            converted = raw as? [String]
        case is [Int].Type:
            if let items = raw as? [Any] {
                let ints = items.compactMap(Self.integer)
                converted = ints.count == items.count ? ints : nil
            } else {
                converted = nil
            }
        default:
            converted = raw as? T
        }
        guard let value = converted as? T else {
            throw ModelError.field(file, prefix + key, "a value of type \(Self.typeName(T.self))", "\(raw)")
        }
        return value
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "integer"
        case is Double.Type: return "number"
        case is Bool.Type: return "boolean"
        case is String.Type: return "string"
        case is [String].Type: return "array of strings"
        case is [Int].Type: return "array of integers"
        default: return "\(type)"
        }
    }
}

extension ModelConfig {
    /// Why the first id of `tokens` outside the vocabulary is refused, or nil
    /// if every id is in range (one message for every place that checks ids).
    public func vocabularyProblem(_ tokens: [Int]) -> String? {
        Self.vocabularyProblem(tokens, vocabularySize: vocabularySize)
    }

    /// The message for the first token id outside `0..<vocabularySize`, if any.
    public static func vocabularyProblem(_ tokens: [Int], vocabularySize: Int) -> String? {
        guard let bad = tokens.first(where: { $0 < 0 || $0 >= vocabularySize }) else { return nil }
        return "token id \(bad) is out of range: the vocabulary has \(vocabularySize) ids (0...\(vocabularySize - 1))"
    }
}
