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
    /// The fused reduce + residual + norm collective (nil: baseline only).
    public let collective: FusedResidualNorm?
    var workspace: Workspace?
    /// Seconds the compute thread has spent inside or waiting for the
    /// per-layer reductions (exposed communication: overlap hides the rest).
    public private(set) var communicationSeconds = 0.0
    /// Records the compute thread's spans (each stagger step, each wait for a
    /// reduction) when set; the collective records the comm thread's.
    public var trace: TraceRecorder? {
        didSet { collective?.trace = trace }
    }

    func timedCommunication<T>(_ body: () throws -> T) rethrows -> T {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { communicationSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
        return try body()
    }

    /// Local widths.
    var localHeads: Int { plan.heads.count }
    var localKVHeads: Int { plan.kvHeads.count }
    var qWidth: Int { localHeads * config.headDim }
    var kvWidth: Int { localKVHeads * config.headDim }
    var qkvWidth: Int { qWidth + 2 * kvWidth }
    var localIntermediate: Int { plan.intermediate.count }

    public init(weights: LlamaWeights, communicator: Communicator, pool: ComputePool, cache: PagedKVCache,
                collective: FusedResidualNorm? = nil) {
        self.collective = collective
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
    ///
    /// - Parameter schedule: how the per-layer reductions run (see `Schedule`);
    ///   an overlapped schedule must have been cut for this batch's size.
    public func forward(_ batch: FlatBatch, schedule: Schedule = .baseline) throws -> [Float] {
        try validate(batch)
        let t = batch.count
        guard t > 0 else { return [] }
        if case .overlap(let cuts) = schedule, cuts.rows != t {
            throw ModelError.input("an overlapped pass was cut for \(cuts.rows) tokens, but the batch has \(t)")
        }
        if schedule.usesFusedCollective {
            guard let collective else { throw ModelError.input("a fused or overlapped pass needs the fused collective, which this model was built without") }
            try collective.reserve(rows: t)
        }
        for span in batch.spans {
            try cache.reserve(sequence: span.sequence, length: span.firstPosition + span.rows.count)
        }
        if workspace == nil || workspace!.capacity < t { workspace = Workspace(capacity: max(t, 16), model: self) }
        let step = try Step(model: self, batch: batch, schedule: schedule)

        let trace = self.trace
        /// Runs one compute step, recorded as a span when tracing.
        func compute(_ name: @autoclosure () -> String, _ body: () -> Void) {
            if let trace { trace.measure(name(), lane: .compute, body) } else { body() }
        }
        func finish(_ operation: FusedResidualNorm.Operation, _ name: @autoclosure () -> String) throws {
            if let trace { try trace.measure(name(), lane: .wait) { try step.finish(operation) } } else { try step.finish(operation) }
        }
        func reduce(_ rows: Range<Int>, weight: FloatBuffer, _ name: @autoclosure () -> String) throws {
            if let trace { try trace.measure(name(), lane: .wait) { try step.reduce(rows, weight: weight) } } else { try step.reduce(rows, weight: weight) }
        }

        compute("embed", step.embed)
        if case .overlap(let cuts) = schedule {
            // TokenWeave's stagger, in K chunks: each chunk's compute runs
            // while the earlier chunks' reductions are in flight on the comm
            // thread. With two chunks (A, B): attention A, attention B, MLP A,
            // MLP B, each beside the other half's reduction. More chunks give
            // a reduction after attention more than one short attention step
            // to hide behind.
            let chunks = cuts.chunks
            let names = chunks.indices.map { chunks.count == 2 ? ["A", "B"][$0] : "c\($0)" }
            var pending = chunks.map { step.beginReduce($0, weight: weights.layers[0].inputNorm) }
            for (index, layer) in weights.layers.enumerated() {
                let next = index + 1 < weights.layers.count ? weights.layers[index + 1].inputNorm : weights.finalNorm
                for (c, rows) in chunks.enumerated() {
                    try finish(pending[c], "wait \(names[c]) L\(index) in")
                    compute("attention \(names[c]) L\(index)") { step.attention(rows, layer: layer, index: index) }
                    pending[c] = step.beginReduce(rows, weight: layer.postAttentionNorm)
                }
                for (c, rows) in chunks.enumerated() {
                    try finish(pending[c], "wait \(names[c]) L\(index) attn")
                    compute("mlp \(names[c]) L\(index)") { step.mlp(rows, layer: layer) }
                    pending[c] = step.beginReduce(rows, weight: next)
                }
            }
            for (c, operation) in pending.enumerated() { try finish(operation, "wait \(names[c]) out") }
        } else {
            let all = 0..<t
            try reduce(all, weight: weights.layers[0].inputNorm, "reduce in")
            for (index, layer) in weights.layers.enumerated() {
                let next = index + 1 < weights.layers.count ? weights.layers[index + 1].inputNorm : weights.finalNorm
                compute("attention L\(index)") { step.attention(all, layer: layer, index: index) }
                try reduce(all, weight: layer.postAttentionNorm, "reduce L\(index) attn")
                compute("mlp L\(index)") { step.mlp(all, layer: layer) }
                try reduce(all, weight: next, "reduce L\(index) mlp")
            }
        }
        var logits: [Float] = []
        compute("logits") { logits = step.logits() }
        return logits
    }

    /// One forward pass's buffers and the steps it is made of, each on a range of batch rows.
    struct Step {
        let model: LlamaModel
        let batch: FlatBatch
        let reduction: Reduction
        let ws: Workspace
        let h: Int
        let eps: Float
        /// Where row-parallel GEMMs write partial sums, where normalized rows
        /// appear, and the residual stream (sharded by rows in fused modes).
        let partials: UnsafeMutablePointer<Float>
        let normed: UnsafeMutablePointer<Float>
        let residual: UnsafeMutablePointer<Float>
        let tables: [Int32]
        let tableRow: [Int32]
        let maxBlocks: Int

        /// How `reduce` sums a range's partials over the ranks.
        enum Reduction { case allReduce, fused, skip }

        init(model: LlamaModel, batch: FlatBatch, schedule: Schedule) throws {
            self.model = model
            self.batch = batch
            switch schedule {
            case .baseline: reduction = .allReduce
            case .fused, .overlap: reduction = .fused
            case .skipReductions: reduction = .skip
            }
            ws = model.workspace!
            h = model.config.hiddenSize
            eps = Float(model.config.rmsNormEps)
            if reduction == .fused, let collective = model.collective {
                partials = collective.partials
                normed = collective.normed
            } else {
                partials = ws.projected.pointer
                normed = ws.normed.pointer
            }
            residual = ws.hidden.pointer
            residual.update(repeating: 0, count: batch.count * h)
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

        /// Sums the partials of `rows` over the ranks, adds them to the
        /// residual and writes RMSNorm(residual) · weight to `normed`.
        func reduce(_ rows: Range<Int>, weight: FloatBuffer) throws {
            let offset = rows.lowerBound * h, count = Int32(rows.count)
            switch reduction {
            case .allReduce:
                try model.timedCommunication { try model.communicator.allReduceSum(partials + offset, count: rows.count * h) }
                weft_op_add_rmsnorm(model.pool.raw, residual + offset, h, partials + offset, h, weight.pointer, normed + offset, h, count, Int32(h), eps)
            case .skip:
                // Timing ideal only: the reduction is skipped (results are wrong for N > 1).
                weft_op_add_rmsnorm(model.pool.raw, residual + offset, h, partials + offset, h, weight.pointer, normed + offset, h, count, Int32(h), eps)
            case .fused:
                try model.timedCommunication {
                    try model.collective!.run(rows: rows, residual: residual, weight: weight.pointer, eps: eps, pool: model.pool)
                }
            }
        }

        func beginReduce(_ rows: Range<Int>, weight: FloatBuffer) -> FusedResidualNorm.Operation {
            model.collective!.begin(rows: rows, residual: residual, weight: weight.pointer, eps: eps)
        }

        func finish(_ operation: FusedResidualNorm.Operation) throws {
            try model.timedCommunication { try model.collective!.finish(operation) }
        }

        /// Attention of `rows` (their keys and values join the cache first, so
        /// a later range of the same sequence sees them), o_proj into `partials`.
        func attention(_ rows: Range<Int>, layer: LlamaWeights.Layer, index: Int) {
            let m = model, pool = m.pool.raw, lo = rows.lowerBound, n = Int32(rows.count)
            let qkvWidth = m.qkvWidth, qWidth = m.qWidth, kvWidth = m.kvWidth
            let qkv = ws.qkv.pointer + lo * qkvWidth
            layer.qkv.apply(pool: m.pool, rows: rows.count, x: normed + lo * h, ldx: h, y: qkv, ldy: qkvWidth)
            if let bias = layer.qkvBias { weft_add_bias(qkv, qkvWidth, bias.pointer, n, Int32(qkvWidth)) }
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

        /// SwiGLU MLP of `rows`, down_proj into `partials`.
        func mlp(_ rows: Range<Int>, layer: LlamaWeights.Layer) {
            let m = model, lo = rows.lowerBound, inter = m.localIntermediate
            let gateUp = ws.gateUp.pointer + lo * 2 * inter, activated = ws.activated.pointer + lo * inter
            layer.gateUp.apply(pool: m.pool, rows: rows.count, x: normed + lo * h, ldx: h, y: gateUp, ldy: 2 * inter)
            weft_op_silu_mul(m.pool.raw, gateUp, gateUp + inter, 2 * inter, activated, inter, Int32(rows.count), Int32(inter))
            layer.down.apply(pool: m.pool, rows: rows.count, x: activated, ldx: inter, y: partials + lo * h, ldy: h)
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

    /// Gathers the vocabulary slices of `forward`'s logits on rank 0 into full
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
