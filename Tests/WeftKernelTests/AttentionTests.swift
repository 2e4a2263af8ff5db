import CKernels
import XCTest

/// Paged causal attention: several sequences of different lengths in one
/// flattened batch, shuffled block tables, a partial last block, grouped-query
/// heads, and work-item ranges split at arbitrary points.
final class AttentionTests: XCTestCase {
    /// A random paged KV cache with its queries.
    struct Case {
        var heads = 0, kvHeads = 0, headDim = 0, blockSize = 0, maxBlocks = 0, tokens = 0
        var ldq = 0, ldo = 0
        var q: [Float] = [], keys: [Float] = [], values: [Float] = []
        var positions: [Int32] = [], tableRow: [Int32] = [], blockTables: [Int32] = [], kvHeadOf: [Int32] = []

        init(rng: inout TestRandom, headDim: Int) {
            kvHeads = rng.int(1, 3)
            let group = rng.int(1, 3)
            heads = kvHeads * group
            self.headDim = headDim
            blockSize = rng.int(1, 20)
            let lengths = (0..<rng.int(1, 3)).map { _ in rng.int(1, 200) }
            maxBlocks = lengths.map { ($0 + blockSize - 1) / blockSize }.max()!
            let blockCount = lengths.count * maxBlocks + 3
            var ids = Array(0..<blockCount)
            for i in stride(from: ids.count - 1, to: 0, by: -1) { ids.swapAt(i, rng.int(0, i)) }
            blockTables = ids.prefix(lengths.count * maxBlocks).map { Int32($0) }
            let cacheFloats = blockCount * blockSize * kvHeads * headDim
            keys = rng.floats(cacheFloats, scale: 2)
            values = rng.floats(cacheFloats)
            for (s, length) in lengths.enumerated() {
                // The newest position (decode) plus a few earlier ones (prefill rows).
                positions.append(Int32(length - 1))
                tableRow.append(Int32(s))
                for _ in 0..<rng.int(0, 4) {
                    positions.append(Int32(rng.int(0, length - 1)))
                    tableRow.append(Int32(s))
                }
            }
            tokens = positions.count
            ldq = heads * headDim + rng.int(0, 5)
            ldo = heads * headDim + rng.int(0, 5)
            q = rng.floats(tokens * ldq, scale: 3)
            kvHeadOf = (0..<heads).map { Int32($0 / group) }
        }

        /// Runs `kernel` on items [0, split) and [split, all) into a copy of `initial`.
        func run(_ kernel: SIMDPath.Attention, split: Int, initial: [Float]) -> [Float] {
            var out = initial
            q.withUnsafeBufferPointer { q in
                keys.withUnsafeBufferPointer { k in
                    values.withUnsafeBufferPointer { v in
                        positions.withUnsafeBufferPointer { pos in
                            tableRow.withUnsafeBufferPointer { rows in
                                blockTables.withUnsafeBufferPointer { tables in
                                    kvHeadOf.withUnsafeBufferPointer { kvh in
                                        out.withUnsafeMutableBufferPointer { o in
                                            var args = weft_attention_args(
                                                n_tokens: Int32(tokens), n_heads: Int32(heads), n_kv_heads: Int32(kvHeads),
                                                head_dim: Int32(headDim), q: q.baseAddress, ldq: ldq, out: o.baseAddress,
                                                ldo: ldo, k_cache: k.baseAddress, v_cache: v.baseAddress,
                                                block_size: Int32(blockSize), positions: pos.baseAddress,
                                                table_row: rows.baseAddress, block_tables: tables.baseAddress,
                                                max_blocks: Int32(maxBlocks), kv_head_of: kvh.baseAddress,
                                                scale: 1 / Float(headDim).squareRoot())
                                            let items = Int32(tokens * heads)
                                            kernel(&args, 0, Int32(split))
                                            kernel(&args, Int32(split), items)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }

        /// Two-pass softmax in float64, for the scalar reference.
        func reference(token t: Int, head h: Int) -> [Double] {
            let g = Int(kvHeadOf[h]), context = Int(positions[t]) + 1
            let table = Int(tableRow[t]) * maxBlocks
            func row(_ p: Int) -> Int {
                ((Int(blockTables[table + p / blockSize]) * blockSize + p % blockSize) * kvHeads + g) * headDim
            }
            let scale = Double(1 / Float(headDim).squareRoot())
            let scores = (0..<context).map { p in
                (0..<headDim).reduce(0.0) { $0 + Double(q[t * ldq + h * headDim + $1]) * Double(keys[row(p) + $1]) } * scale
            }
            let top = scores.max()!
            let weights = scores.map { exp($0 - top) }
            let total = weights.reduce(0, +)
            return (0..<headDim).map { d in
                (0..<context).reduce(0.0) { $0 + weights[$1] * Double(values[row($1) + d]) } / total
            }
        }
    }

    func testScalarMatchesTwoPassSoftmax() {
        var rng = TestRandom(seed: 17)
        for headDim in [8, 13] {
            let c = Case(rng: &rng, headDim: headDim)
            let out = c.run(weft_attention_scalar, split: 0, initial: [Float](repeating: 0, count: c.tokens * c.ldo))
            for t in 0..<c.tokens {
                for h in 0..<c.heads {
                    let want = c.reference(token: t, head: h)
                    for d in 0..<headDim {
                        XCTAssertEqual(Double(out[t * c.ldo + h * headDim + d]), want[d], accuracy: 1e-5,
                                       "token \(t) head \(h) d \(d)")
                    }
                }
            }
        }
    }

    func testAVX512() throws { try check(SIMDPath.require(.avx512)) }
    func testAVX2() throws { try check(SIMDPath.require(.avx2)) }

    /// Outputs are convex combinations of value rows in [-1, 1]: absolute 1e-5.
    private func check(_ path: SIMDPath) {
        var rng = TestRandom(seed: 23)
        for headDim in [1, 3, 8, 16, 20, 32, 64, 100, 128] {
            for _ in 0..<3 {
                let c = Case(rng: &rng, headDim: headDim)
                let initial = rng.floats(c.tokens * c.ldo)
                let split = rng.int(0, c.tokens * c.heads)
                let want = c.run(weft_attention_scalar, split: 0, initial: initial)
                let got = c.run(path.attention, split: split, initial: initial)
                for idx in got.indices {
                    let inHead = idx % c.ldo < c.heads * headDim
                    let ok = inHead ? abs(got[idx] - want[idx]) <= 1e-5 : got[idx].bitPattern == want[idx].bitPattern
                    if !ok {
                        XCTFail("\(path.name) head_dim=\(headDim) block_size=\(c.blockSize) heads=\(c.heads)/\(c.kvHeads): "
                                + "out[\(idx)] = \(got[idx]), scalar \(want[idx])")
                        return
                    }
                }
            }
        }
    }
}
