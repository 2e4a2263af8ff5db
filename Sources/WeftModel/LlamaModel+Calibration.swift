import CKernels
import Foundation
import WeftTensor

extension LlamaModel {
    /// Weights (elements) of one layer's attention (qkv + o) and of a dense
    /// layer's MLP (gate/up + down) on this rank; the MLP is 0 when every
    /// layer is sparse (`expertLayers` describes those).
    public var layerWeights: (attention: Int, mlp: Int) {
        let l = weights.layers[0]
        let attention = Self.elements(l.qkv) + Self.elements(l.output)
        guard let dense = weights.layers.first(where: { $0.gateUp != nil }) else { return (attention, 0) }
        return (attention, Self.elements(dense.gateUp!) + Self.elements(dense.down!))
    }

    /// The sparse layers on this rank: experts held (all of them, sliced,
    /// with tensor-parallel experts; whole ones with expert parallelism), one
    /// held expert's weights, and the router's and shared expert's, which
    /// every token multiplies.
    public var expertLayers: ExpertLayerShape? {
        guard let moe = config.moe, let sparse = weights.layers.first(where: { $0.experts != nil }),
              let experts = sparse.experts, !experts.gateUp.isEmpty else { return nil }
        let shared = experts.shared.map { Self.elements($0.gateUp) + Self.elements($0.down) + Self.elements($0.gate) } ?? 0
        return ExpertLayerShape(count: moe.expertCount, perToken: moe.expertsPerToken, held: experts.held.count,
                                weightsPerExpert: Self.elements(experts.gateUp[0]) + Self.elements(experts.down[0]),
                                sharedWeights: Self.elements(experts.router) + shared,
                                layers: weights.layers.filter { $0.experts != nil }.count)
    }

    static func elements(_ linear: Linear) -> Int { linear.outFeatures * linear.inFeatures }

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
        // Inputs for the dense GEMM's `rows` rows and the expert curve's up to 64.
        let x = FloatBuffer(count: max(rows, ComputeRates.expertRows.last!) * h, zeroed: true)
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
        // An expert's GEMM at the few rows a chunk gives it (gate/up of the first held expert).
        var expertCurve: [Double]?
        if let expert = weights.layers.first(where: { $0.experts != nil })?.experts?.gateUp.first {
            let ye = FloatBuffer(count: 64 * expert.outFeatures)
            let expertWeights = Double(Self.elements(expert))
            // Each point the fastest of several runs (interference only adds), then
            // shaped as a GEMM's time is: never less for more rows, never more per row.
            var curve = ComputeRates.expertRows.map { m in
                (0..<(2 * max(1, repeats) + 1)).map { _ in
                    ComputeRates.medianSeconds(1) {
                        expert.apply(pool: pool, rows: m, x: x.pointer, ldx: h, y: ye.pointer, ldy: expert.outFeatures)
                    }
                }.min()! / expertWeights
            }
            let rowCounts = ComputeRates.expertRows.map(Double.init)
            for i in 1..<curve.count {
                curve[i] = min(max(curve[i], curve[i - 1]), curve[i - 1] * rowCounts[i] / rowCounts[i - 1])
            }
            expertCurve = curve
        }
        return ComputeRates(gemmFlopsPerSecond: 2 * Double(rows) * weightFloats / many,
                            weightBytesPerSecond: 4 * weightFloats / one,
                            attentionPairsPerSecond: pairs / attention, expertSecondsPerWeight: expertCurve)
    }
}
