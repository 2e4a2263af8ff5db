import Foundation
import WeftTensor

/// One rank's share of a Llama-family model's weights, in float32, packed for
/// the GEMM kernels and placed on the rank's NUMA node.
public final class LlamaWeights: @unchecked Sendable {
    public final class Layer: @unchecked Sendable {
        public let inputNorm: FloatBuffer
        /// q (local heads), k and v (local KV heads) rows fused into one GEMM.
        public let qkv: PackedWeight
        public let qkvBias: FloatBuffer?
        /// o_proj columns of the local heads.
        public let output: PackedWeight
        public let postAttentionNorm: FloatBuffer
        /// gate rows then up rows of the local intermediate range, one GEMM.
        public let gateUp: PackedWeight
        /// down_proj columns of the local intermediate range.
        public let down: PackedWeight

        init(inputNorm: FloatBuffer, qkv: PackedWeight, qkvBias: FloatBuffer?, output: PackedWeight,
             postAttentionNorm: FloatBuffer, gateUp: PackedWeight, down: PackedWeight) {
            self.inputNorm = inputNorm
            self.qkv = qkv
            self.qkvBias = qkvBias
            self.output = output
            self.postAttentionNorm = postAttentionNorm
            self.gateUp = gateUp
            self.down = down
        }
    }

    public let config: ModelConfig
    public let plan: TensorParallelPlan
    /// Embedding rows of the local vocabulary range; nil when tied to the LM
    /// head, whose packed rows are then read for lookups.
    public let embedding: FloatBuffer?
    public let layers: [Layer]
    public let finalNorm: FloatBuffer
    /// LM head rows of the local vocabulary range.
    public let lmHead: PackedWeight

    /// Bytes of weights resident on this rank.
    public var byteCount: Int {
        var floats = finalNorm.count + lmHead.storage.count + (embedding?.count ?? 0)
        for l in layers {
            floats += l.inputNorm.count + l.postAttentionNorm.count + l.qkv.storage.count + (l.qkvBias?.count ?? 0)
            floats += l.output.storage.count + l.gateUp.storage.count + l.down.storage.count
        }
        return floats * 4
    }

    /// A contiguous piece of the rows of a fused weight: `rowCount` rows read
    /// from `tensor` starting at `firstRow`, restricted to `columns`.
    struct Segment {
        var tensor: String
        var firstRow: Int
        var rowCount: Int
        var columns: Range<Int>
    }

    /// Validates every tensor against the config, then loads this rank's slices.
    public init(config: ModelConfig, plan: TensorParallelPlan, source: WeightSource, pool: ComputePool, node: Int?) throws {
        self.config = config
        self.plan = plan
        let h = config.hiddenSize, hd = config.headDim
        let qRows = config.headCount * hd, kvRows = config.kvHeadCount * hd
        let tied = config.tieWordEmbeddings

        // Validate first, so a bad checkpoint fails before any slow loading.
        try source.validate("model.embed_tokens.weight", shape: [config.vocabularySize, h])
        if !tied { try source.validate("lm_head.weight", shape: [config.vocabularySize, h]) }
        try source.validate("model.norm.weight", shape: [h])
        for i in 0..<config.layerCount {
            let p = "model.layers.\(i)."
            try source.validate(p + "input_layernorm.weight", shape: [h])
            try source.validate(p + "post_attention_layernorm.weight", shape: [h])
            try source.validate(p + "self_attn.q_proj.weight", shape: [qRows, h])
            try source.validate(p + "self_attn.k_proj.weight", shape: [kvRows, h])
            try source.validate(p + "self_attn.v_proj.weight", shape: [kvRows, h])
            try source.validate(p + "self_attn.o_proj.weight", shape: [h, qRows])
            if config.attentionBias {
                try source.validate(p + "self_attn.q_proj.bias", shape: [qRows])
                try source.validate(p + "self_attn.k_proj.bias", shape: [kvRows])
                try source.validate(p + "self_attn.v_proj.bias", shape: [kvRows])
            }
            try source.validate(p + "mlp.gate_proj.weight", shape: [config.intermediateSize, h])
            try source.validate(p + "mlp.up_proj.weight", shape: [config.intermediateSize, h])
            try source.validate(p + "mlp.down_proj.weight", shape: [h, config.intermediateSize])
        }

        // Refuse a model this host cannot hold before allocating any of it (a
        // config within every limit can still ask for terabytes, e.g. with
        // random weights). This rank's share of the float32 weights, rounded
        // up: config.validate bounds the parameter count to 2^42, so no overflow.
        let shareBytes = (config.parameterCount + plan.size - 1) / plan.size * MemoryLayout<Float>.stride
        let hostBytes = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        if hostBytes > 0, shareBytes > hostBytes {
            let gib = { (bytes: Int) in String(format: "%.1f GiB", Double(bytes) / 1_073_741_824) }
            throw ModelError.parallelism("the model's float32 weights need \(gib(shareBytes)) per rank at tensor-parallel degree \(plan.size) (\(config.parameterCount) parameters), more than this host's \(gib(hostBytes)) of memory")
        }

        func vector(_ name: String, _ range: Range<Int>) -> FloatBuffer {
            let buffer = FloatBuffer(count: range.count, node: node)
            source.readVector(name, range: range, into: buffer.pointer)
            source.finished(name)
            return buffer
        }
        func packed(_ segments: [Segment], inFeatures: Int) -> PackedWeight {
            let total = segments.reduce(0) { $0 + $1.rowCount }
            let weight = PackedWeight(outFeatures: total, inFeatures: inFeatures, node: node, pool: pool) { first, count, scratch, ld in
                // Map fused rows [first, first+count) back to their tensors.
                var row = first, out = scratch, remaining = count, offset = 0
                for segment in segments {
                    defer { offset += segment.rowCount }
                    guard remaining > 0, row < offset + segment.rowCount else { continue }
                    let take = min(remaining, offset + segment.rowCount - row)
                    let sourceRow = segment.firstRow + (row - offset)
                    source.readSlice(segment.tensor, rows: sourceRow..<sourceRow + take, columns: segment.columns, into: out, ld: ld)
                    out += take * ld
                    row += take
                    remaining -= take
                }
            }
            for segment in Set(segments.map(\.tensor)) { source.finished(segment) }
            return weight
        }

        let qRange = plan.heads.lowerBound * hd ..< plan.heads.upperBound * hd
        let kvRange = plan.kvHeads.lowerBound * hd ..< plan.kvHeads.upperBound * hd
        let inter = plan.intermediate
        var layers: [Layer] = []
        for i in 0..<config.layerCount {
            let p = "model.layers.\(i)."
            let qkv = packed([
                Segment(tensor: p + "self_attn.q_proj.weight", firstRow: qRange.lowerBound, rowCount: qRange.count, columns: 0..<h),
                Segment(tensor: p + "self_attn.k_proj.weight", firstRow: kvRange.lowerBound, rowCount: kvRange.count, columns: 0..<h),
                Segment(tensor: p + "self_attn.v_proj.weight", firstRow: kvRange.lowerBound, rowCount: kvRange.count, columns: 0..<h),
            ], inFeatures: h)
            var bias: FloatBuffer?
            if config.attentionBias {
                let b = FloatBuffer(count: qRange.count + 2 * kvRange.count, node: node)
                source.readVector(p + "self_attn.q_proj.bias", range: qRange, into: b.pointer)
                source.readVector(p + "self_attn.k_proj.bias", range: kvRange, into: b.pointer + qRange.count)
                source.readVector(p + "self_attn.v_proj.bias", range: kvRange, into: b.pointer + qRange.count + kvRange.count)
                bias = b
            }
            layers.append(Layer(
                inputNorm: vector(p + "input_layernorm.weight", 0..<h),
                qkv: qkv,
                qkvBias: bias,
                output: packed([Segment(tensor: p + "self_attn.o_proj.weight", firstRow: 0, rowCount: h, columns: qRange)], inFeatures: qRange.count),
                postAttentionNorm: vector(p + "post_attention_layernorm.weight", 0..<h),
                gateUp: packed([
                    Segment(tensor: p + "mlp.gate_proj.weight", firstRow: inter.lowerBound, rowCount: inter.count, columns: 0..<h),
                    Segment(tensor: p + "mlp.up_proj.weight", firstRow: inter.lowerBound, rowCount: inter.count, columns: 0..<h),
                ], inFeatures: h),
                down: packed([Segment(tensor: p + "mlp.down_proj.weight", firstRow: 0, rowCount: h, columns: inter)], inFeatures: inter.count)))
        }
        self.layers = layers
        finalNorm = vector("model.norm.weight", 0..<h)
        let vocab = plan.vocabulary
        let headTensor = tied ? "model.embed_tokens.weight" : "lm_head.weight"
        lmHead = packed([Segment(tensor: headTensor, firstRow: vocab.lowerBound, rowCount: vocab.count, columns: 0..<h)], inFeatures: h)
        if tied {
            embedding = nil
        } else {
            let table = FloatBuffer(count: vocab.count * h, node: node)
            // Rows are first-touched by the pool threads in even row ranges.
            pool.run { t, n in
                let rows = TensorParallelPlan.evenSplit(vocab.count, parts: n, index: t)
                guard !rows.isEmpty else { return }
                source.readSlice("model.embed_tokens.weight", rows: vocab.lowerBound + rows.lowerBound ..< vocab.lowerBound + rows.upperBound,
                                 columns: 0..<h, into: table.pointer + rows.lowerBound * h, ld: h)
            }
            source.finished("model.embed_tokens.weight")
            embedding = table
        }
    }

    /// Copies the embedding of global token `token` (which must be in this
    /// rank's vocabulary range) into `out`.
    func embed(token: Int, into out: UnsafeMutablePointer<Float>) {
        let local = token - plan.vocabulary.lowerBound
        let h = config.hiddenSize
        if let embedding {
            out.update(from: embedding.pointer + local * h, count: h)
        } else {
            // Tied: gather the row from the LM head's packed panels.
            let nr = PackedWeight.panelRows
            let panel = lmHead.storage.pointer + (local / nr) * nr * h + local % nr
            for k in 0..<h { out[k] = panel[k * nr] }
        }
    }
}
