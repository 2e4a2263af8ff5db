import Foundation

/// The architecture hyper-parameters of a Llama-family model, read from a
/// Hugging Face `config.json`.
public struct ModelConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable, CaseIterable {
        case llama = "LlamaForCausalLM"
        case mistral = "MistralForCausalLM"
        case qwen2 = "Qwen2ForCausalLM"
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

    public init(architecture: Architecture, hiddenSize: Int, intermediateSize: Int, layerCount: Int,
                headCount: Int, kvHeadCount: Int, headDim: Int? = nil, vocabularySize: Int,
                rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, ropeScaling: Llama3RopeScaling? = nil,
                maxPositionEmbeddings: Int = 4096, tieWordEmbeddings: Bool = false,
                attentionBias: Bool? = nil, bosTokenID: Int? = nil, eosTokenIDs: [Int] = []) {
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
        self.attentionBias = attentionBias ?? (architecture == .qwen2)
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
    }

    /// Parameters of the model (embedding and LM head counted once each).
    public var parameterCount: Int {
        let attention = hiddenSize * headDim * (headCount + 2 * kvHeadCount) + headCount * headDim * hiddenSize
        let bias = attentionBias ? headDim * (headCount + 2 * kvHeadCount) : 0
        let mlp = 3 * hiddenSize * intermediateSize
        let perLayer = attention + bias + mlp + 2 * hiddenSize
        let embeddings = vocabularySize * hiddenSize * (tieWordEmbeddings ? 1 : 2)
        return layerCount * perLayer + embeddings + hiddenSize
    }

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
        return inv.map { Float($0) }
    }
}

// MARK: - Reading config.json

extension ModelConfig {
    /// Reads and validates `DIR/config.json`.
    public static func load(directory: URL) throws -> ModelConfig {
        let url = directory.appendingPathComponent("config.json")
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError.file(url.path, "cannot read: \(ModelError.reason(error))")
        }
        return try parse(data, file: url.path)
    }

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
        let hidden: Int = try fields.require("hidden_size", positive: true)
        let heads: Int = try fields.require("num_attention_heads", positive: true)
        let kvHeads: Int = try fields.optional("num_key_value_heads", positive: true) ?? heads
        let headDim: Int = try fields.optional("head_dim", positive: true) ?? hidden / heads
        guard headDim % 2 == 0 else { throw ModelError.field(file, "head_dim", "an even number (RoPE rotates halves)", "\(headDim)") }
        guard heads % kvHeads == 0 else {
            throw ModelError.field(file, "num_key_value_heads", "a divisor of num_attention_heads (\(heads))", "\(kvHeads)")
        }
        if json["head_dim"] == nil, hidden % heads != 0 {
            throw ModelError.field(file, "hidden_size", "a multiple of num_attention_heads (\(heads)) when head_dim is absent", "\(hidden)")
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
                factor: try sub.require("factor", positive: true),
                lowFreqFactor: try sub.require("low_freq_factor", positive: true),
                highFreqFactor: try sub.require("high_freq_factor", positive: true),
                originalMaxPositionEmbeddings: try sub.require("original_max_position_embeddings", positive: true))
            if scaling!.highFreqFactor <= scaling!.lowFreqFactor {
                throw ModelError.field(file, "rope_scaling.high_freq_factor", "greater than low_freq_factor (\(scaling!.lowFreqFactor))", "\(scaling!.highFreqFactor)")
            }
        }
        var eos: [Int] = []
        if let single: Int = try? fields.optional("eos_token_id") { eos = [single] }
        else if let many: [Int] = try? fields.optional("eos_token_id") { eos = many }
        return ModelConfig(
            architecture: architecture,
            hiddenSize: hidden,
            intermediateSize: try fields.require("intermediate_size", positive: true),
            layerCount: try fields.require("num_hidden_layers", positive: true),
            headCount: heads,
            kvHeadCount: kvHeads,
            headDim: headDim,
            vocabularySize: try fields.require("vocab_size", positive: true),
            rmsNormEps: try fields.optional("rms_norm_eps", positive: true) ?? 1e-6,
            ropeTheta: try fields.optional("rope_theta", positive: true) ?? 10000,
            ropeScaling: scaling,
            maxPositionEmbeddings: try fields.optional("max_position_embeddings", positive: true) ?? 2048,
            tieWordEmbeddings: try fields.optional("tie_word_embeddings") ?? false,
            attentionBias: architecture == .qwen2 ? true : (try fields.optional("attention_bias") ?? false),
            bosTokenID: try? fields.optional("bos_token_id"),
            eosTokenIDs: eos)
    }
}

/// Typed access to a JSON object's fields with errors that name the file and field.
struct JSONFields {
    let json: [String: Any]
    let file: String
    var prefix = ""

    init(_ json: [String: Any], file: String, prefix: String = "") {
        self.json = json
        self.file = file
        self.prefix = prefix
    }

    func require<T>(_ key: String, positive: Bool = false) throws -> T {
        guard let value: T = try optional(key, positive: positive) else {
            throw ModelError.field(file, prefix + key, "a value of type \(Self.typeName(T.self))", "missing")
        }
        return value
    }

    func optional<T>(_ key: String, positive: Bool = false) throws -> T? {
        guard let raw = json[key], !(raw is NSNull) else { return nil }
        let converted: Any?
        switch T.self {
        case is Int.Type:
            // Integral numbers only: 2048.5 is not a size.
            if let n = raw as? NSNumber, !(raw is String), n.doubleValue == Double(n.intValue) { converted = n.intValue } else { converted = nil }
        case is Double.Type:
            converted = (raw as? NSNumber).map(\.doubleValue)
        case is Bool.Type:
            converted = raw as? Bool
        case is String.Type:
            converted = raw as? String
        case is [String].Type:
            converted = raw as? [String]
        case is [Int].Type:
            converted = (raw as? [NSNumber])?.map(\.intValue)
        default:
            converted = raw as? T
        }
        guard let value = converted as? T else {
            throw ModelError.field(file, prefix + key, "a value of type \(Self.typeName(T.self))", "\(raw)")
        }
        if positive {
            if let i = value as? Int, i <= 0 { throw ModelError.field(file, prefix + key, "a positive integer", "\(i)") }
            if let d = value as? Double, !(d > 0) { throw ModelError.field(file, prefix + key, "a positive number", "\(d)") }
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
