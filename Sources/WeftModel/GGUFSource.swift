import CKernels
import Foundation
import WeftTensor

/// A GGUF file as a model: the configuration from its metadata and its
/// tensors under the Hugging Face names the model code uses. Tensors keep
/// their stored format (`storedFormat`); each rank copies only its rows.
///
/// llama.cpp's converter reorders the rows of each q and k head of `llama`
/// models (for its interleaved RoPE); this source undoes that, so the model
/// code applies Hugging Face's rotate-half RoPE to every architecture.
public final class GGUFSource: WeightSource, @unchecked Sendable {
    public let file: GGUFFile
    public let config: ModelConfig
    /// The architecture's tensor table, which names every tensor in both forms.
    public let table: ArchitectureTable
    /// GGUF tensor name → heads of a q/k tensor whose rows were permuted
    /// (the table's `ggufPermutedHeads`).
    let permutedHeads: [String: Int]
    /// Hugging Face name → GGUF name of every tensor the config needs (the
    /// table's two columns, looked up once rather than on every read).
    let storedNames: [String: String]
    /// A routed expert's Hugging Face name → its expert index and rows: its
    /// rows are `expert * rows ..< (expert + 1) * rows` of the stacked tensor
    /// (GGUF order [columns, rows, experts], read as a matrix of experts × rows rows).
    let expertRows: [String: (expert: Int, rows: Int)]

    public var description: String { file.path }
    var path: String { file.path }

    public convenience init(path: String) throws {
        try self.init(file: GGUFFile(path: path))
    }

    public init(file: GGUFFile) throws {
        self.file = file
        config = try ModelConfig(gguf: file)
        table = config.tensorTable
        var permuted: [String: Int] = [:], names: [String: String] = [:], experts: [String: (Int, Int)] = [:]
        for tensor in table.tensors(config) {
            names[tensor.name] = tensor.entry.ggufName(layer: tensor.layer)
            if let heads = tensor.entry.ggufPermutedHeads(config) { permuted[tensor.entry.ggufName(layer: tensor.layer)] = heads }
            if let expert = tensor.expert { experts[tensor.name] = (expert, tensor.entry.shape(config)[0]) }
        }
        permutedHeads = permuted
        storedNames = names
        expertRows = experts
    }

    /// The GGUF name of a Hugging Face tensor name of the Llama family
    /// (unchanged if the table does not name it).
    public static func ggufName(_ name: String) -> String {
        LlamaArchitecture.table.ggufName(name) ?? name
    }

    /// The GGUF name of a Hugging Face tensor name in this file's architecture.
    func storedName(_ name: String) -> String { storedNames[name] ?? table.ggufName(name) ?? name }

    func info(_ name: String) -> GGUFTensorInfo? { file.tensor(storedName(name)) }

    public func validate(_ name: String, shape: [Int]) throws {
        let g = storedName(name)
        // A routed expert's tensor is one slice of its layer's stacked tensor.
        let stacked = expertRows[name] != nil ? [config.moe?.expertCount ?? 0] : []
        let expected = Array(shape.reversed()) + stacked
        guard let info = file.tensor(g) else {
            throw ModelError.tensor(path, g, "missing (expected shape \(expected) in GGUF order)")
        }
        // A one-row matrix may be stored as a vector (llama.cpp's ffn_gate_inp_shexp).
        // (never a routed expert's, whose rows live in a stacked 3-D tensor).
        let oneRow = expertRows[name] == nil && shape.count == 2 && shape[0] == 1 && info.ne == [shape[1]]
        guard info.ne == expected || oneRow else {
            throw ModelError.tensor(path, g, "shape \(info.ne) (GGUF order), expected \(expected) from the metadata")
        }
        guard let format = WeightFormat(rawValue: Int32(info.type.rawValue)), format.isSupported else {
            let names = WeightFormat.allCases.filter(\.isSupported).map { $0.description.uppercased() }
            throw ModelError.tensor(path, g, "type \(info.type.name) is not supported (supported: \(names.joined(separator: ", ")))")
        }
        if let heads = permutedHeads[g], (info.ne.last ?? 0) % (2 * heads) != 0 {
            throw ModelError.tensor(path, g, "\(info.ne.last ?? 0) rows do not split into \(heads) heads of even size")
        }
    }

    public func storedFormat(_ name: String) -> WeightFormat {
        info(name).flatMap { WeightFormat(rawValue: Int32($0.type.rawValue)) } ?? .f32
    }

    /// The file row holding Hugging Face row `row` of tensor `name` (GGUF name `g`).
    func fileRow(_ name: String, _ g: String, _ row: Int, rows: Int) -> Int {
        if let (expert, expertRows) = expertRows[name] { return expert * expertRows + row }
        guard let heads = permutedHeads[g] else { return row }
        let hd = rows / heads, half = hd / 2
        let head = row / hd, within = row % hd
        return head * hd + 2 * (within % half) + within / half
    }

    public func readSlice(_ name: String, rows: Range<Int>, columns: Range<Int>,
                          into destination: UnsafeMutablePointer<Float>, ld: Int) {
        let g = storedName(name)
        let info = file.tensor(g)!
        let base = file.bytes(of: info).baseAddress!
        let format = Int32(info.type.rawValue)
        if info.ne.count == 1 {
            // A vector: one row; a permuted q/k bias reorders its elements.
            let n = info.columns
            let all = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { all.deallocate() }
            _ = weft_dequantize_row(format, base, all, Int64(n))
            for (i, c) in columns.enumerated() { destination[i] = all[fileRow(name, g, c, rows: n)] }
            return
        }
        let k = info.columns, rowBytes = info.rowByteCount, total = info.rows
        let row = UnsafeMutablePointer<Float>.allocate(capacity: k)
        defer { row.deallocate() }
        for (i, r) in rows.enumerated() {
            _ = weft_dequantize_row(format, base + fileRow(name, g, r, rows: total) * rowBytes, row, Int64(k))
            (destination + i * ld).update(from: row + columns.lowerBound, count: columns.count)
        }
    }

    public func readStoredRows(_ name: String, rows: Range<Int>, columns: Range<Int>,
                               into destination: UnsafeMutableRawPointer, stride: Int) {
        let g = storedName(name)
        let info = file.tensor(g)!
        let base = file.bytes(of: info).baseAddress!
        let be = info.type.blockSize, bb = info.type.bytesPerBlock
        let start = columns.lowerBound / be * bb, count = columns.count / be * bb
        for (i, r) in rows.enumerated() {
            (destination + i * stride).copyMemory(from: base + fileRow(name, g, r, rows: info.rows) * info.rowByteCount + start, byteCount: count)
        }
    }

    public func finished(_ name: String) {
        // A stacked expert tensor is released with its last expert (with
        // expert parallelism a rank reads only some; the rest stay unread).
        if let (expert, _) = expertRows[name], expert != (config.moe?.expertCount ?? 0) - 1 { return }
        if let info = info(name) { file.release(info) }
    }
}

extension ModelConfig {
    /// The configuration in a GGUF file's metadata (`general.architecture`
    /// and its `ARCH.*` keys, as llama.cpp writes them), validated like a
    /// config.json; errors name the GGUF key.
    public init(gguf file: GGUFFile) throws {
        let h = file.header, path = file.path
        let supported = "llama, qwen2, qwen2moe or qwen3moe"
        guard let arch = try h.string("general.architecture") else {
            throw ModelError.field(path, "general.architecture", "a string (\(supported))", "missing")
        }
        func required(_ key: String) throws -> Int {
            guard let v = try h.int("\(arch).\(key)") else { throw ModelError.field(path, "\(arch).\(key)", "an integer", "missing") }
            return v
        }
        let architecture: Architecture
        let expertCount = try h.int("\(arch).expert_count") ?? 0
        switch arch {
        case "llama": architecture = expertCount != 0 ? .mixtral : .llama   // a negative count is refused by validate
        case "qwen2": architecture = .qwen2
        case "qwen2moe": architecture = .qwen2Moe
        case "qwen3moe": architecture = .qwen3Moe
        default: throw ModelError.field(path, "general.architecture", supported, "\"\(arch)\"")
        }
        let moe = try architecture.experts(gguf: h, prefix: arch, path: path)
        func float(_ key: String) throws -> Double? { try h.double("\(arch).\(key)") }
        let hidden = try required("embedding_length")
        let heads = try required("attention.head_count")
        let kvHeads = try h.int("\(arch).attention.head_count_kv") ?? heads
        guard let eps = try float("attention.layer_norm_rms_epsilon") else {
            throw ModelError.field(path, "\(arch).attention.layer_norm_rms_epsilon", "a float", "missing")
        }
        let embeddingName = LlamaArchitecture.embedding.ggufName()
        guard let embedding = file.tensor(embeddingName) else {
            throw ModelError.tensor(path, embeddingName, "missing")
        }
        let vocabulary = try h.int("\(arch).vocab_size") ?? (embedding.ne.count == 2 ? embedding.ne[1] : 0)
        if let type = try h.string("\(arch).rope.scaling.type"), type != "none" {
            // Llama 3's scaling is stored as rope_freqs.weight; linear and YaRN are not implemented.
            throw ModelError.field(path, "\(arch).rope.scaling.type", "none (rope_freqs.weight carries Llama 3's scaling)", "\"\(type)\"")
        }
        var eos: [Int] = []
        if let id = try h.int("tokenizer.ggml.eos_token_id") { eos.append(id) }
        if let id = try h.int("tokenizer.ggml.eot_token_id"), !eos.contains(id) { eos.append(id) }
        self.init(architecture: architecture, hiddenSize: hidden,
                  intermediateSize: try required("feed_forward_length"),
                  layerCount: try required("block_count"),
                  headCount: heads, kvHeadCount: kvHeads,
                  headDim: try h.int("\(arch).attention.key_length") ?? (heads > 0 ? hidden / heads : 0),
                  vocabularySize: vocabulary, rmsNormEps: eps,
                  ropeTheta: try float("rope.freq_base") ?? 10000,
                  maxPositionEmbeddings: try required("context_length"),
                  tieWordEmbeddings: file.tensor(LlamaArchitecture.lmHead.ggufName()) == nil,
                  attentionBias: file.tensor(LlamaArchitecture.qBias.ggufName(layer: 0)) != nil,
                  bosTokenID: try h.int("tokenizer.ggml.bos_token_id"), eosTokenIDs: eos, moe: moe)
        // The same range checks as config.json, reported under the GGUF key.
        let keys = [
            "hidden_size": "\(arch).embedding_length", "intermediate_size": "\(arch).feed_forward_length",
            "num_hidden_layers": "\(arch).block_count", "num_attention_heads": "\(arch).attention.head_count",
            "num_key_value_heads": "\(arch).attention.head_count_kv", "head_dim": "\(arch).attention.key_length",
            "vocab_size": "\(arch).vocab_size", "max_position_embeddings": "\(arch).context_length",
            "rms_norm_eps": "\(arch).attention.layer_norm_rms_epsilon", "rope_theta": "\(arch).rope.freq_base",
            "bos_token_id": "tokenizer.ggml.bos_token_id", "eos_token_id": "tokenizer.ggml.eos_token_id",
            "num_local_experts": "\(arch).expert_count", "num_experts": "\(arch).expert_count",
            "num_experts_per_tok": "\(arch).expert_used_count",
            "moe_intermediate_size": "\(arch).expert_feed_forward_length",
            "shared_expert_intermediate_size": "\(arch).expert_shared_feed_forward_length",
        ]
        do { try validate(file: path) } catch ModelError.field(let file, let field, let expected, let found) {
            throw ModelError.field(file, keys[field] ?? field, expected, found)
        }
        if let rot = try h.int("\(arch).rope.dimension_count"), rot != headDim {
            throw ModelError.field(path, "\(arch).rope.dimension_count", "the head size \(headDim) (partial rotary is not implemented)", "\(rot)")
        }
        if let factors = file.tensor("rope_freqs.weight") {
            guard factors.type == .f32, factors.ne == [headDim / 2] else {
                throw ModelError.tensor(path, "rope_freqs.weight", "expected F32 of shape [\(headDim / 2)], found \(factors.type.name) \(factors.ne)")
            }
            let raw = file.bytes(of: factors)
            let values = (0..<headDim / 2).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
            guard values.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw ModelError.tensor(path, "rope_freqs.weight", "factors must be finite and positive")
            }
            ropeFrequencyFactors = values
        }
    }
}
