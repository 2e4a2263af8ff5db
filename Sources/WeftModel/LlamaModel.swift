import CKernels
import Foundation
import WeftComm
import WeftTensor

/// The Llama family's layer maths on one rank (Llama, Mistral, Qwen2: the
/// same pieces, Qwen2 with q/k/v biases; and their mixture-of-experts
/// relatives Mixtral, Qwen2-MoE and Qwen3-MoE, whose sparse layers run
/// `ExpertWeights.forward` in place of the MLP and whose Qwen3 attention
/// normalizes q and k per head), tensor-parallel: attention heads
/// and MLP rows split across ranks, the embedding and the LM head split by
/// vocabulary; experts split by rows or placed whole (`plan.moePlacement`). The pieces leave partial sums; WeftSchedule's `DecoderRunner`
/// reduces them and runs the pass under a schedule (`DecoderLayers`).
public final class LlamaModel {
    public let config: ModelConfig
    public let plan: TensorParallelPlan
    public let weights: LlamaWeights
    public let pool: ComputePool
    public let cache: PagedKVCache
    /// Gathers the vocabulary slices of the logits (`gatherLogits`).
    let communicator: Communicator
    let inverseFrequencies: FloatBuffer
    let kvHeadOf: [Int32]
    var workspace: Workspace?
    /// Tokens routed to each expert since the last `takeExpertLoad()` (MoE models).
    var expertLoad: ExpertLoad?

    /// Local widths.
    var localHeads: Int { plan.heads.count }
    var localKVHeads: Int { plan.kvHeads.count }
    var qWidth: Int { localHeads * config.headDim }
    var kvWidth: Int { localKVHeads * config.headDim }
    var qkvWidth: Int { qWidth + 2 * kvWidth }
    var localIntermediate: Int { plan.intermediate.count }

    public init(weights: LlamaWeights, communicator: Communicator, pool: ComputePool, cache: PagedKVCache) {
        self.config = weights.config
        self.plan = weights.plan
        self.weights = weights
        self.communicator = communicator
        self.pool = pool
        self.cache = cache
        inverseFrequencies = FloatBuffer(weights.config.ropeInverseFrequencies())
        kvHeadOf = weights.plan.kvHeadOfLocalHead(config: weights.config)
        expertLoad = weights.config.moe.map { ExpertLoad(expertCount: $0.expertCount) }
    }

    /// Tokens routed to each expert (summed over sparse layers) since the
    /// last call, and resets the count; nil for a dense model. Routing is
    /// the same on every rank, so rank 0's count describes every rank.
    public func takeExpertLoad() -> ExpertLoad? {
        defer { expertLoad = config.moe.map { ExpertLoad(expertCount: $0.expertCount) } }
        return expertLoad
    }

    /// Scratch activations inside the pieces, sized for a batch of up to
    /// `capacity` tokens (the rows between pieces are the runner's).
    final class Workspace {
        let capacity: Int
        let qkv, attention, gateUp, activated: FloatBuffer
        let experts: ExpertWorkspace?
        init(capacity: Int, model: LlamaModel) {
            self.capacity = capacity
            qkv = FloatBuffer(count: capacity * model.qkvWidth)
            attention = FloatBuffer(count: capacity * model.qWidth)
            // A model whose every layer is sparse needs no dense MLP scratch.
            let dense = (0..<model.config.layerCount).contains { !model.config.isSparse(layer: $0) }
            gateUp = FloatBuffer(count: dense ? capacity * 2 * model.localIntermediate : 0)
            activated = FloatBuffer(count: dense ? capacity * model.localIntermediate : 0)
            experts = model.config.moe.map { moe in
                ExpertWorkspace(capacity: capacity, hidden: model.config.hiddenSize, expertCount: moe.expertCount,
                                intermediate: max(model.plan.expertIntermediate.count, model.plan.sharedExpertIntermediate.count))
            }
        }
    }

    /// Checks a batch against the model before any rank computes on it.
    public func validate(_ batch: FlatBatch) throws {
        for (row, token) in batch.tokens.enumerated() where token < 0 || Int(token) >= config.vocabularySize {
            throw ModelError.input("token id \(token) at position \(batch.positions[row]) is out of range: the vocabulary has \(config.vocabularySize) ids (0...\(config.vocabularySize - 1))")
        }
        for span in batch.spans {
            let end = span.firstPosition + span.rows.count
            guard span.firstPosition >= 0, end <= config.maxPositionEmbeddings else {
                throw ModelError.input("sequence \(span.sequence) would reach position \(end), beyond max_position_embeddings \(config.maxPositionEmbeddings)")
            }
        }
    }

    /// One forward pass's pieces over one batch, each on a range of its rows.
    struct Pass: DecoderPass {
        let model: LlamaModel
        let batch: FlatBatch
        let ws: Workspace
        let h: Int
        /// Where row-parallel GEMMs write partial sums and where normalized rows appear.
        let partials: UnsafeMutablePointer<Float>
        let normed: UnsafeMutablePointer<Float>
        let tables: [Int32]
        let tableRow: [Int32]
        let maxBlocks: Int

        init(model: LlamaModel, batch: FlatBatch, buffers: PassBuffers) {
            self.model = model
            self.batch = batch
            ws = model.workspace!
            h = model.config.hiddenSize
            partials = buffers.partials
            normed = buffers.normed
            // Block tables: one row per span, padded to the longest.
            let cache = model.cache
            maxBlocks = max(1, batch.spans.map { cache.tables[$0.sequence]!.count }.max()!)
            var tables = [Int32](repeating: 0, count: batch.spans.count * maxBlocks)
            for (i, span) in batch.spans.enumerated() {
                for (j, block) in cache.tables[span.sequence]!.enumerated() { tables[i * maxBlocks + j] = block }
            }
            self.tables = tables
            tableRow = batch.spanOfRow.map { Int32($0) }
        }

        /// Embedding, vocabulary-parallel: each rank writes the rows of tokens
        /// it owns and zeros elsewhere; the first reduction sums them.
        func embed() {
            partials.update(repeating: 0, count: batch.count * h)
            for (row, token) in batch.tokens.enumerated() where model.plan.vocabulary.contains(Int(token)) {
                model.weights.embed(token: Int(token), into: partials + row * h)
            }
        }

        /// Attention of `rows` (their keys and values join the cache first, so
        /// a later range of the same sequence sees them), o_proj into `partials`.
        func attention(_ rows: Range<Int>, layer index: Int) {
            let layer = model.weights.layers[index]
            let m = model, pool = m.pool.raw, lo = rows.lowerBound, n = Int32(rows.count)
            let qkvWidth = m.qkvWidth, qWidth = m.qWidth, kvWidth = m.kvWidth
            let qkv = ws.qkv.pointer + lo * qkvWidth
            layer.qkv.apply(pool: m.pool, rows: rows.count, x: normed + lo * h, ldx: h, y: qkv, ldy: qkvWidth)
            if let bias = layer.qkvBias { weft_add_bias(qkv, qkvWidth, bias.pointer, n, Int32(qkvWidth)) }
            if let qNorm = layer.qNorm, let kNorm = layer.kNorm {
                // Qwen3: RMSNorm over each head of q and k, before RoPE.
                let hd = m.config.headDim, eps = m.rmsNormEps
                for head in 0..<m.localHeads {
                    weft_rmsnorm(qkv + head * hd, qkvWidth, qNorm.pointer, qkv + head * hd, qkvWidth, n, Int32(hd), eps)
                }
                for head in 0..<m.localKVHeads {
                    let k = qkv + qWidth + head * hd
                    weft_rmsnorm(k, qkvWidth, kNorm.pointer, k, qkvWidth, n, Int32(hd), eps)
                }
            }
            let (keys, values) = m.cache.pools(layer: index), kvDType = m.cache.dtype.kernelValue
            let attentionOut = ws.attention.pointer + lo * qWidth
            batch.positions.withUnsafeBufferPointer { allPositions in
                tableRow.withUnsafeBufferPointer { allRows in
                    tables.withUnsafeBufferPointer { tbl in
                        m.kvHeadOf.withUnsafeBufferPointer { kvOf in
                            let pos = allPositions.baseAddress! + lo, tableRows = allRows.baseAddress! + lo
                            weft_op_rope(pool, qkv, qkvWidth, n, Int32(m.localHeads), Int32(m.config.headDim), pos, m.inverseFrequencies.pointer)
                            weft_op_rope(pool, qkv + qWidth, qkvWidth, n, Int32(m.localKVHeads), Int32(m.config.headDim), pos, m.inverseFrequencies.pointer)
                            // Keys and values are rounded to the cache's type here (the
                            // dtype is one of KVDType's, so the write cannot be refused).
                            _ = weft_kv_write_dtype(keys, values, kvDType, Int32(m.cache.blockSize),
                                                    Int32(m.localKVHeads), Int32(m.config.headDim),
                                                    qkv + qWidth, qkvWidth, qkv + qWidth + kvWidth, qkvWidth,
                                                    pos, tableRows, tbl.baseAddress, Int32(maxBlocks), n)
                            var args = weft_attention_kv_args(
                                n_tokens: n, n_heads: Int32(m.localHeads), n_kv_heads: Int32(m.localKVHeads),
                                head_dim: Int32(m.config.headDim), q: qkv, ldq: qkvWidth, out: attentionOut, ldo: qWidth,
                                k_cache: keys, v_cache: values, kv_dtype: kvDType, block_size: Int32(m.cache.blockSize),
                                positions: pos, table_row: tableRows, block_tables: tbl.baseAddress,
                                max_blocks: Int32(maxBlocks), kv_head_of: kvOf.baseAddress,
                                scale: 1 / Float(m.config.headDim).squareRoot())
                            weft_op_attention_kv(pool, &args)
                        }
                    }
                }
            }
            layer.output.apply(pool: m.pool, rows: rows.count, x: attentionOut, ldx: qWidth, y: partials + lo * h, ldy: h)
        }

        /// SwiGLU MLP of `rows`, down_proj into `partials`; in a sparse layer,
        /// the experts' (`ExpertWeights.forward`).
        func mlp(_ rows: Range<Int>, layer index: Int) {
            let layer = model.weights.layers[index]
            let m = model, lo = rows.lowerBound, inter = m.localIntermediate
            if let experts = layer.experts, let moe = m.config.moe, let expertSpace = ws.experts {
                let routing = experts.forward(rows: rows.count, x: normed + lo * h, h: h, out: partials + lo * h,
                                              moe: moe, pool: m.pool, ws: expertSpace)
                m.expertLoad?.record(routing, size: m.plan.size, placement: m.plan.moePlacement)
                return
            }
            let gateUp = ws.gateUp.pointer + lo * 2 * inter, activated = ws.activated.pointer + lo * inter
            layer.gateUp!.apply(pool: m.pool, rows: rows.count, x: normed + lo * h, ldx: h, y: gateUp, ldy: 2 * inter)
            weft_op_silu_mul(m.pool.raw, gateUp, gateUp + inter, 2 * inter, activated, inter, Int32(rows.count), Int32(inter))
            layer.down!.apply(pool: m.pool, rows: rows.count, x: activated, ldx: inter, y: partials + lo * h, ldy: h)
        }

        /// LM head on the rows that want logits, this rank's vocabulary slice.
        func logits() -> [Float] {
            let rows = batch.logitRows
            guard !rows.isEmpty else { return [] }
            let selected = FloatBuffer(count: rows.count * h)
            for (i, row) in rows.enumerated() { (selected.pointer + i * h).update(from: normed + row * h, count: h) }
            let vocab = model.plan.vocabulary.count
            var logits = [Float](repeating: 0, count: rows.count * vocab)
            logits.withUnsafeMutableBufferPointer { out in
                model.weights.lmHead.apply(pool: model.pool, rows: rows.count, x: selected.pointer, ldx: h, y: out.baseAddress!, ldy: vocab)
            }
            return logits
        }
    }

    /// Gathers the vocabulary slices of a pass's logits on rank 0 into full
    /// rows (row-major, `rowCount` x vocab_size); returns [] on other ranks.
    public func gatherLogits(_ local: [Float], rowCount: Int) throws -> [Float] {
        guard rowCount > 0 else { return [] }   // the same on every rank: no collective needed
        let gathered = try local.withUnsafeBufferPointer { try communicator.gather($0.baseAddress!, count: local.count) }
        guard communicator.isRoot else { return [] }
        if communicator.size == 1 { return gathered }
        let v = config.vocabularySize
        var full = [Float](repeating: 0, count: rowCount * v)
        var offset = 0
        for r in 0..<communicator.size {
            let range = TensorParallelPlan.evenSplit(v, parts: communicator.size, index: r)
            for row in 0..<rowCount {
                for j in 0..<range.count { full[row * v + range.lowerBound + j] = gathered[offset + row * range.count + j] }
            }
            offset += rowCount * range.count
        }
        return full
    }
}

extension LlamaModel: DecoderLayers {
    public var hiddenSize: Int { config.hiddenSize }
    public var layerCount: Int { config.layerCount }
    public var rmsNormEps: Float { Float(config.rmsNormEps) }

    public func inputNorm(layer: Int) -> FloatBuffer {
        layer < weights.layers.count ? weights.layers[layer].inputNorm : weights.finalNorm
    }

    public func postAttentionNorm(layer: Int) -> FloatBuffer { weights.layers[layer].postAttentionNorm }

    public func beginPass(_ batch: FlatBatch, buffers: PassBuffers) throws -> any DecoderPass {
        for span in batch.spans {
            try cache.reserve(sequence: span.sequence, length: span.firstPosition + span.rows.count)
        }
        if workspace == nil || workspace!.capacity < batch.count { workspace = Workspace(capacity: max(batch.count, 16), model: self) }
        return Pass(model: self, batch: batch, buffers: buffers)
    }
}
