import CKernels
import Foundation
import WeftComm
import WeftTensor

/// Rates measured on this rank with the model's own weights, for the token
/// split cost model. Every rank must call `measureRates` together (it runs
/// fused collectives).
public struct MeasuredRates: Sendable {
    public var gemmFlopsPerSecond: Double
    public var weightBytesPerSecond: Double
    public var attentionPairsPerSecond: Double
    public var collectiveLatency: Double
    public var collectiveSecondsPerRow: Double
}

extension LlamaModel {
    /// Weights (elements) of one layer's attention (qkv + o) and MLP (gate/up + down) on this rank.
    public var localLayerWeights: (attention: Int, mlp: Int) {
        let l = weights.layers[0]
        return (l.qkv.outFeatures * l.qkv.inFeatures + l.output.outFeatures * l.output.inFeatures,
                l.gateUp.outFeatures * l.gateUp.inFeatures + l.down.outFeatures * l.down.inFeatures)
    }

    /// Median seconds of `body` over `repeats` runs after one warm-up.
    static func median(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }

    /// Measures GEMM, weight streaming, attention and (if present) the fused
    /// collective on `rows` rows. Takes well under a second on ~1B shapes.
    public func measureRates(rows: Int = 64, repeats: Int = 3) throws -> MeasuredRates {
        let h = config.hiddenSize
        let layer = weights.layers[0]
        let x = FloatBuffer(count: rows * max(h, layer.down.inFeatures), zeroed: true)
        for i in 0..<x.count { x[i] = Float((i * 7919) % 1000) / 1000 - 0.5 }
        let y = FloatBuffer(count: rows * layer.gateUp.outFeatures)
        let many = try Self.median(repeats) { layer.gateUp.apply(pool: pool, rows: rows, x: x.pointer, ldx: h, y: y.pointer, ldy: layer.gateUp.outFeatures) }
        let one = try Self.median(repeats) { layer.gateUp.apply(pool: pool, rows: 1, x: x.pointer, ldx: h, y: y.pointer, ldy: layer.gateUp.outFeatures) }
        let weightFloats = Double(layer.gateUp.outFeatures * layer.gateUp.inFeatures)

        // Attention: `rows` queries at the end of a 4×rows context of a scratch sequence.
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
        // The kernel and cache type the forward pass uses.
        let attention = try Self.median(repeats) {
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

        var latency = 0.0, perRow = 0.0
        if let collective {
            try collective.reserve(rows: rows)
            if workspace == nil || workspace!.capacity < rows { workspace = Workspace(capacity: max(rows, 16), model: self) }
            let residual = workspace!.hidden.pointer
            residual.update(repeating: 0, count: rows * h)
            collective.partials.update(repeating: 0, count: rows * h)
            let norm = layer.inputNorm.pointer, eps = Float(config.rmsNormEps)
            let single = try Self.median(repeats) { try collective.run(rows: 0..<1, residual: residual, weight: norm, eps: eps, pool: pool) }
            let full = try Self.median(repeats) { try collective.run(rows: 0..<rows, residual: residual, weight: norm, eps: eps, pool: pool) }
            latency = single
            perRow = max(0, full - single) / Double(rows - 1)
        }
        return MeasuredRates(gemmFlopsPerSecond: 2 * Double(rows) * weightFloats / many,
                             // As float32-equivalent bytes per second (the cost model
                             // streams 4 bytes per weight element), whatever the format.
                             weightBytesPerSecond: 4 * weightFloats / one,
                             attentionPairsPerSecond: pairs / attention,
                             collectiveLatency: latency, collectiveSecondsPerRow: perRow)
    }
}
