import CKernels
import Foundation
import WeftTensor

extension LlamaModel {
    /// Weights (elements) of one layer's attention (qkv + o) and MLP (gate/up + down) on this rank;
    /// for a sparse layer, the weights one token multiplies (its chosen
    /// experts' slices and the shared expert's).
    public var layerWeights: (attention: Int, mlp: Int) {
        let l = weights.layers[0]
        func elements(_ linear: Linear) -> Int { linear.outFeatures * linear.inFeatures }
        let attention = elements(l.qkv) + elements(l.output)
        guard let experts = l.experts, let moe = config.moe else { return (attention, elements(l.gateUp!) + elements(l.down!)) }
        // Per expert on this rank: its slice (tensor-parallel experts), or on average
        // its share of whole experts (expert parallelism, held / count of them).
        let perExpert = elements(experts.gateUp[0]) + elements(experts.down[0])
        let held = Double(experts.held.count) / Double(moe.expertCount)
        let routed = Int(Double(moe.expertsPerToken * perExpert) * (plan.moePlacement == .expertParallel ? held : 1))
        let shared = experts.shared.map { elements($0.gateUp) + elements($0.down) } ?? 0
        return (attention, routed + shared)
    }

    /// The gate/up projection calibration times: the dense MLP's, or the
    /// first held expert's in a sparse layer.
    var calibrationLinear: Linear {
        let l = weights.layers[0]
        return l.gateUp ?? l.experts!.gateUp[0]
    }

    /// Measures GEMM (gate/up on `rows` rows), weight streaming (the same on
    /// one row) and attention (`rows` queries at the end of a 4 × `rows`
    /// context) with this rank's weights and the forward pass's kernels and
    /// KV cache type. Takes well under a second on ~1B shapes.
    public func measureComputeRates(rows: Int = 64, repeats: Int = 3) throws -> ComputeRates {
        let h = config.hiddenSize
        let gateUp = calibrationLinear
        let x = FloatBuffer(count: rows * h, zeroed: true)
        for i in 0..<x.count { x[i] = Float((i * 7919) % 1000) / 1000 - 0.5 }
        let y = FloatBuffer(count: rows * gateUp.outFeatures)
        let many = ComputeRates.medianSeconds(repeats) { gateUp.apply(pool: pool, rows: rows, x: x.pointer, ldx: h, y: y.pointer, ldy: gateUp.outFeatures) }
        let one = ComputeRates.medianSeconds(repeats) { gateUp.apply(pool: pool, rows: 1, x: x.pointer, ldx: h, y: y.pointer, ldy: gateUp.outFeatures) }
        let weightFloats = Double(gateUp.outFeatures * gateUp.inFeatures)

        // A scratch one-layer cache, so calibration never takes the engine's blocks.
        let context = 4 * rows
        let scratchCache = PagedKVCache(layerCount: 1, blockSize: cache.blockSize,
                                        blockCount: cache.blocksNeeded(forLength: context), kvWidth: kvWidth, node: nil,
                                        dtype: cache.dtype)
        try scratchCache.reserve(sequence: 0, length: context)
        scratchCache.keys[0].fill(0)
        scratchCache.values[0].fill(0)
        let table = scratchCache.tables[0]!
        let positions = (0..<rows).map { Int32(context - rows + $0) }
        let tableRows = [Int32](repeating: 0, count: rows)
        let q = FloatBuffer(count: rows * qWidth, zeroed: true), out = FloatBuffer(count: rows * qWidth)
        let (keys, values) = scratchCache.pools(layer: 0)
        let attention = ComputeRates.medianSeconds(repeats) {
            positions.withUnsafeBufferPointer { pos in
                tableRows.withUnsafeBufferPointer { tr in
                    table.withUnsafeBufferPointer { tbl in
                        kvHeadOf.withUnsafeBufferPointer { kvOf in
                            var args = weft_attention_kv_args(
                                n_tokens: Int32(rows), n_heads: Int32(localHeads), n_kv_heads: Int32(localKVHeads),
                                head_dim: Int32(config.headDim), q: q.pointer, ldq: qWidth, out: out.pointer, ldo: qWidth,
                                k_cache: keys, v_cache: values, kv_dtype: cache.dtype.kernelValue, block_size: Int32(cache.blockSize),
                                positions: pos.baseAddress, table_row: tr.baseAddress, block_tables: tbl.baseAddress,
                                max_blocks: Int32(table.count), kv_head_of: kvOf.baseAddress, scale: 0.125)
                            weft_op_attention_kv(pool.raw, &args)
                        }
                    }
                }
            }
        }
        let pairs = positions.reduce(0.0) { $0 + Double($1) + 1 }
        return ComputeRates(gemmFlopsPerSecond: 2 * Double(rows) * weightFloats / many,
                            weightBytesPerSecond: 4 * weightFloats / one,
                            attentionPairsPerSecond: pairs / attention)
    }
}
