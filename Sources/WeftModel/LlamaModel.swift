import CKernels
import Foundation
import WeftComm
import WeftTensor

/// The tensor-parallel forward pass of a Llama-family decoder on one rank.
///
/// Every rank calls `forward` with the same batch; the two all-reduces per
/// layer (after attention's o_proj and the MLP's down_proj) and the
/// vocabulary-parallel embedding go through `communicator`.
public final class LlamaModel {
    public let config: ModelConfig
    public let plan: TensorParallelPlan
    public let weights: LlamaWeights
    public let pool: ComputePool
    public let cache: PagedKVCache
    let communicator: Communicator
    let inverseFrequencies: FloatBuffer
    let kvHeadOf: [Int32]
    var workspace: Workspace?

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
    }

    /// Scratch activations sized for a batch of up to `capacity` tokens.
    final class Workspace {
        let capacity: Int
        let hidden, normed, qkv, attention, projected, gateUp, activated: FloatBuffer
        init(capacity: Int, model: LlamaModel) {
            let h = model.config.hiddenSize
            self.capacity = capacity
            hidden = FloatBuffer(count: capacity * h)
            normed = FloatBuffer(count: capacity * h)
            qkv = FloatBuffer(count: capacity * model.qkvWidth)
            attention = FloatBuffer(count: capacity * model.qWidth)
            projected = FloatBuffer(count: capacity * h)
            gateUp = FloatBuffer(count: capacity * 2 * model.localIntermediate)
            activated = FloatBuffer(count: capacity * model.localIntermediate)
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

    /// Runs the batch through the model, writing its keys and values into the
    /// cache, and returns this rank's slice of the logits: one row of
    /// `plan.vocabulary.count` floats per entry of `batch.logitRows`.
    public func forward(_ batch: FlatBatch) throws -> [Float] {
        try validate(batch)
        let t = batch.count
        guard t > 0 else { return [] }
        for span in batch.spans {
            try cache.reserve(sequence: span.sequence, length: span.firstPosition + span.rows.count)
        }
        if workspace == nil || workspace!.capacity < t { workspace = Workspace(capacity: max(t, 16), model: self) }
        let ws = workspace!
        let h = config.hiddenSize, eps = Float(config.rmsNormEps)

        // Block tables: one row per span, padded to the longest.
        let maxBlocks = max(1, batch.spans.map { cache.tables[$0.sequence]!.count }.max()!)
        var tables = [Int32](repeating: 0, count: batch.spans.count * maxBlocks)
        for (i, span) in batch.spans.enumerated() {
            for (j, block) in cache.tables[span.sequence]!.enumerated() { tables[i * maxBlocks + j] = block }
        }
        let tableRow = batch.spanOfRow.map { Int32($0) }
        let positions = batch.positions

        // Embedding, vocabulary-parallel: each rank writes the rows it owns, zeros elsewhere, then sum.
        let hidden = ws.hidden.pointer
        hidden.update(repeating: 0, count: t * h)
        for (row, token) in batch.tokens.enumerated() where plan.vocabulary.contains(Int(token)) {
            weights.embed(token: Int(token), into: hidden + row * h)
        }
        try communicator.allReduceSum(hidden, count: t * h)

        let normed = ws.normed.pointer
        weft_op_rmsnorm(pool.raw, hidden, h, weights.layers[0].inputNorm.pointer, normed, h, Int32(t), Int32(h), eps)

        for (index, layer) in weights.layers.enumerated() {
            // Attention.
            let qkv = ws.qkv.pointer
            layer.qkv.apply(pool: pool, rows: t, x: normed, ldx: h, y: qkv, ldy: qkvWidth)
            if let bias = layer.qkvBias { weft_add_bias(qkv, qkvWidth, bias.pointer, Int32(t), Int32(qkvWidth)) }
            positions.withUnsafeBufferPointer { pos in
                weft_op_rope(pool.raw, qkv, qkvWidth, Int32(t), Int32(localHeads), Int32(config.headDim), pos.baseAddress, inverseFrequencies.pointer)
                weft_op_rope(pool.raw, qkv + qWidth, qkvWidth, Int32(t), Int32(localKVHeads), Int32(config.headDim), pos.baseAddress, inverseFrequencies.pointer)
            }
            let keys = cache.keys[index].pointer, values = cache.values[index].pointer
            positions.withUnsafeBufferPointer { pos in
                tableRow.withUnsafeBufferPointer { rows in
                    tables.withUnsafeBufferPointer { tbl in
                        weft_kv_write(keys, values, Int32(cache.blockSize), Int32(kvWidth),
                                      qkv + qWidth, qkvWidth, qkv + qWidth + kvWidth, qkvWidth,
                                      pos.baseAddress, rows.baseAddress, tbl.baseAddress, Int32(maxBlocks), Int32(t))
                        kvHeadOf.withUnsafeBufferPointer { kvOf in
                            var args = weft_attention_args(
                                n_tokens: Int32(t), n_heads: Int32(localHeads), n_kv_heads: Int32(localKVHeads),
                                head_dim: Int32(config.headDim), q: qkv, ldq: qkvWidth, out: ws.attention.pointer, ldo: qWidth,
                                k_cache: keys, v_cache: values, block_size: Int32(cache.blockSize),
                                positions: pos.baseAddress, table_row: rows.baseAddress, block_tables: tbl.baseAddress,
                                max_blocks: Int32(maxBlocks), kv_head_of: kvOf.baseAddress,
                                scale: 1 / Float(config.headDim).squareRoot())
                            weft_op_attention(pool.raw, &args)
                        }
                    }
                }
            }
            let projected = ws.projected.pointer
            layer.output.apply(pool: pool, rows: t, x: ws.attention.pointer, ldx: qWidth, y: projected, ldy: h)
            try communicator.allReduceSum(projected, count: t * h)
            weft_op_add_rmsnorm(pool.raw, hidden, h, projected, h, layer.postAttentionNorm.pointer, normed, h, Int32(t), Int32(h), eps)

            // MLP.
            let gateUp = ws.gateUp.pointer, inter = localIntermediate
            layer.gateUp.apply(pool: pool, rows: t, x: normed, ldx: h, y: gateUp, ldy: 2 * inter)
            weft_op_silu_mul(pool.raw, gateUp, gateUp + inter, 2 * inter, ws.activated.pointer, inter, Int32(t), Int32(inter))
            layer.down.apply(pool: pool, rows: t, x: ws.activated.pointer, ldx: inter, y: projected, ldy: h)
            try communicator.allReduceSum(projected, count: t * h)
            let nextNorm = index + 1 < weights.layers.count ? weights.layers[index + 1].inputNorm : weights.finalNorm
            weft_op_add_rmsnorm(pool.raw, hidden, h, projected, h, nextNorm.pointer, normed, h, Int32(t), Int32(h), eps)
        }

        // LM head on the requested rows only, this rank's vocabulary slice.
        let rows = batch.logitRows
        guard !rows.isEmpty else { return [] }
        let selected = FloatBuffer(count: rows.count * h)
        for (i, row) in rows.enumerated() { (selected.pointer + i * h).update(from: normed + row * h, count: h) }
        let vocab = plan.vocabulary.count
        var logits = [Float](repeating: 0, count: rows.count * vocab)
        logits.withUnsafeMutableBufferPointer { out in
            weights.lmHead.apply(pool: pool, rows: rows.count, x: selected.pointer, ldx: h, y: out.baseAddress!, ldy: vocab)
        }
        return logits
    }

    /// Gathers the vocabulary slices of `forward`'s logits on rank 0 into full
    /// rows (row-major, `rowCount` x vocab_size); returns [] on other ranks.
    public func gatherLogits(_ local: [Float], rowCount: Int) throws -> [Float] {
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
