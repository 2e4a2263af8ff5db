import CKernels
import XCTest

/// The KV cache in 16 bits: float32 -> f16/bf16 rounding (every path against
/// the scalar reference, the scalar reference against Swift's Float16 and
/// the nearest-even rule), the typed KV write (head-major layout), and
/// attention over f32, f16 and bf16 caches (scalar against a float64
/// two-pass softmax over the same rounded values, each SIMD path against the
/// scalar one, and against the float32 weft_attention on the same data).
final class KV16AttentionTests: XCTestCase {
    typealias Convert = @convention(c) (UnsafePointer<Float>?, UnsafeMutablePointer<UInt16>?, Int) -> Void
    typealias AttentionKV = @convention(c) (UnsafePointer<weft_attention_kv_args>?, Int32, Int32) -> Void

    struct Path {
        let name: String
        let isa: weft_isa
        let toF16: Convert
        let toBF16: Convert
        let attention: AttentionKV
    }

    static let scalar = Path(name: "scalar", isa: WEFT_ISA_SCALAR, toF16: weft_f32_to_f16_scalar,
                             toBF16: weft_f32_to_bf16_scalar, attention: weft_attention_kv_scalar)
    static let avx2 = Path(name: "avx2", isa: WEFT_ISA_AVX2, toF16: weft_f32_to_f16_avx2,
                           toBF16: weft_f32_to_bf16_avx2, attention: weft_attention_kv_avx2)
    static let avx512 = Path(name: "avx512", isa: WEFT_ISA_AVX512, toF16: weft_f32_to_f16_avx512,
                             toBF16: weft_f32_to_bf16_avx512, attention: weft_attention_kv_avx512)

    static func require(_ path: Path) throws -> Path {
        let best = weft_isa_detect()
        if best.rawValue < path.isa.rawValue {
            throw XCTSkip("\(path.name) kernels need a CPU with \(path.name); this one has \(String(cString: weft_isa_name(best)))")
        }
        return path
    }

    // ------------------------------------------------------------ rounding

    /// Random bit patterns (every exponent, both signs), values near the f16
    /// limits (subnormal, overflow, exact ties) and the special values.
    static func conversionInputs(count: Int, seed: UInt64) -> [Float] {
        var rng = TestRandom(seed: seed)
        var xs: [Float] = [0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 65536, 6.1035156e-05, 5.9604645e-08,
                           2.9802322e-08, 2.9802326e-08, 1e-9, .infinity, -.infinity, .nan, -.nan,
                           .greatestFiniteMagnitude, .leastNonzeroMagnitude, 1 + 0x1p-11, 1 + 0x1p-11 + 0x1p-23,
                           1 + 3 * 0x1p-11, 1 + 0x1p-8, 1 + 3 * 0x1p-8]
        for i in 0..<count {
            let bits = UInt32(truncatingIfNeeded: rng.next())
            switch i % 3 {
            case 0: xs.append(Float(bitPattern: bits))
            case 1: xs.append(Float(bitPattern: (bits & 0x8000_0000) | (0x3000_0000 + bits % 0x1800_0000)))  // 2^-31 .. 2^17
            default: xs.append(Float(bitPattern: (bits & 0x8000_1fff) | 0x3c00_0000 | ((bits & 0x3ff) << 13)) )  // ties and near-ties
            }
        }
        return xs
    }

    func testScalarF16RoundingEqualsSwiftFloat16() {
        let xs = Self.conversionInputs(count: 200_000, seed: 3)
        var out = [UInt16](repeating: 0, count: xs.count)
        weft_f32_to_f16_scalar(xs, &out, xs.count)
        for (x, h) in zip(xs, out) {
            let want = Float16(x)
            if x.isNaN {
                XCTAssertTrue(Float16(bitPattern: h).isNaN && h & 0x200 != 0 && (h >> 15) == (x.sign == .minus ? 1 : 0),
                              "NaN \(String(x.bitPattern, radix: 16)) -> \(String(h, radix: 16))")
            } else if h != want.bitPattern {
                XCTFail("f16(\(x) = 0x\(String(x.bitPattern, radix: 16))) = 0x\(String(h, radix: 16)), Swift's Float16 0x\(String(want.bitPattern, radix: 16))")
                return
            }
        }
    }

    /// bf16: the nearest representable value, ties to an even mantissa, overflow to infinity.
    func testScalarBF16RoundingIsNearestEven() {
        let xs = Self.conversionInputs(count: 200_000, seed: 5)
        var out = [UInt16](repeating: 0, count: xs.count)
        weft_f32_to_bf16_scalar(xs, &out, xs.count)
        // The value of a bf16 pattern; the pattern above the largest finite
        // one counts as 2^128 (IEEE rounds to infinity from half an ulp beyond).
        func widen(_ b: UInt32) -> Double {
            b & 0x7fff == 0x7f80 ? (b & 0x8000 != 0 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: b << 16))
        }
        for (x, b) in zip(xs, out) {
            if x.isNaN {
                XCTAssertTrue(Float(bitPattern: UInt32(b) << 16).isNaN && b & 0x40 != 0, "bf16 NaN \(String(x.bitPattern, radix: 16))")
                continue
            }
            let got = widen(UInt32(b)), exact = Double(x)
            if x.isInfinite { XCTAssertEqual(Float(bitPattern: UInt32(b) << 16), x); continue }
            // Neighbours of the truncation toward zero.
            let down = UInt32(x.bitPattern >> 16), up = down + 1
            let dDown = abs(exact - widen(down)), dUp = abs(exact - widen(up))
            let want = dDown < dUp ? down : dUp < dDown ? up : (down & 1 == 0 ? down : up)
            if UInt32(b) != want {
                XCTFail("bf16(\(x) = 0x\(String(x.bitPattern, radix: 16))) = 0x\(String(b, radix: 16)), nearest-even 0x\(String(want, radix: 16))")
                return
            }
        }
    }

    func testAVX2ConversionsEqualScalar() throws { try checkConversions(Self.require(Self.avx2)) }
    func testAVX512ConversionsEqualScalar() throws { try checkConversions(Self.require(Self.avx512)) }

    /// Bit for bit, NaNs included, at every length around the vector widths.
    private func checkConversions(_ path: Path) {
        let xs = Self.conversionInputs(count: 100_000, seed: 11)
        for (name, simd, ref) in [("f16", path.toF16, Self.scalar.toF16), ("bf16", path.toBF16, Self.scalar.toBF16)] {
            var want = [UInt16](repeating: 0, count: xs.count), got = [UInt16](repeating: 0xAAAA, count: xs.count)
            ref(xs, &want, xs.count)
            simd(xs, &got, xs.count)
            XCTAssertEqual(got, want, "\(path.name) \(name) over \(xs.count) values")
            for n in 0...40 {
                var tail = [UInt16](repeating: 0xAAAA, count: n + 3)
                xs.withUnsafeBufferPointer { simd($0.baseAddress! + 7, &tail, n) }
                XCTAssertEqual(Array(tail[..<n]), Array(want[7..<(7 + n)]), "\(path.name) \(name) n=\(n)")
                XCTAssertEqual(Array(tail[n...]), [0xAAAA, 0xAAAA, 0xAAAA], "\(path.name) \(name) n=\(n) wrote past the end")
            }
        }
    }

    // ------------------------------------------------------------ KV write

    func testTypedKVWriteRoundsIntoItsSlots() {
        var rng = TestRandom(seed: 29)
        let blockSize = 3, kvHeads = 2, headDim = 7, kvWidth = kvHeads * headDim, blocks = 5, rows = 4, ld = kvWidth + 2
        let tables: [Int32] = [4, 1, 3, 0, 2, 4]   // two rows of max_blocks 3
        let positions: [Int32] = [0, 7, 2, 5], tableRow: [Int32] = [0, 0, 1, 1]
        let k = rng.floats(rows * ld, scale: 100), v = rng.floats(rows * ld, scale: 100)
        for dtype in [WEFT_KV_F32, WEFT_KV_F16, WEFT_KV_BF16] {
            let esize = weft_kv_dtype_size(Int32(dtype.rawValue))
            let bytes = blocks * blockSize * kvWidth * esize
            var kc = [UInt8](repeating: 0x5A, count: bytes), vc = [UInt8](repeating: 0x5A, count: bytes)
            let status = weft_kv_write_dtype(&kc, &vc, Int32(dtype.rawValue), Int32(blockSize), Int32(kvHeads), Int32(headDim),
                                             k, ld, v, ld, positions, tableRow, tables, 3, Int32(rows))
            XCTAssertEqual(status, 0)
            var expectK = [UInt8](repeating: 0x5A, count: bytes), expectV = expectK
            for r in 0..<rows {
                let p = Int(positions[r])
                let block = Int(tables[Int(tableRow[r]) * 3 + p / blockSize])
                for g in 0..<kvHeads {
                    for (src, dst) in [(k, 0), (v, 1)] {
                        let row = Array(src[(r * ld + g * headDim)..<(r * ld + (g + 1) * headDim)])
                        var encoded: [UInt8]
                        switch dtype {
                        case WEFT_KV_F16:
                            var h = [UInt16](repeating: 0, count: headDim); weft_f32_to_f16_scalar(row, &h, headDim)
                            encoded = h.withUnsafeBytes { Array($0) }
                        case WEFT_KV_BF16:
                            var h = [UInt16](repeating: 0, count: headDim); weft_f32_to_bf16_scalar(row, &h, headDim)
                            encoded = h.withUnsafeBytes { Array($0) }
                        default:
                            encoded = row.withUnsafeBytes { Array($0) }
                        }
                        // Head-major: (block, kv head, slot, d).
                        let offset = ((block * kvHeads + g) * blockSize + p % blockSize) * headDim * esize
                        if dst == 0 { expectK.replaceSubrange(offset..<(offset + encoded.count), with: encoded) }
                        else { expectV.replaceSubrange(offset..<(offset + encoded.count), with: encoded) }
                    }
                }
            }
            XCTAssertEqual(kc, expectK, "keys, dtype \(dtype.rawValue)")
            XCTAssertEqual(vc, expectV, "values, dtype \(dtype.rawValue)")
        }
        var sinkK = [UInt8](repeating: 0, count: 64), sinkV = sinkK
        XCTAssertEqual(weft_kv_write_dtype(&sinkK, &sinkV, 7, 1, 1, 1, k, ld, v, ld, positions, tableRow, tables, 3, 1), -1)
        XCTAssertEqual(weft_kv_dtype_size(7), 0)
        XCTAssertEqual(sinkK + sinkV, [UInt8](repeating: 0, count: 128), "an unknown dtype writes nothing")
    }

    // ------------------------------------------------------------ attention

    /// AttentionTests' random paged cache (position-major layout), moved to
    /// weft_attention_kv's head-major layout and stored in `dtype`.
    struct TypedCase {
        var base: AttentionTests.Case
        let dtype: weft_kv_dtype
        /// The 16-bit cache as stored.
        var keys16: [UInt16] = [], values16: [UInt16] = []
        /// The stored values widened back to float32 (what attention must
        /// see), head-major; for float32 the cache itself.
        var keys: [Float] = [], values: [Float] = []

        /// (block, slot, kv head, d) -> (block, kv head, slot, d).
        static func headMajor(_ x: [Float], _ c: AttentionTests.Case) -> [Float] {
            var y = x
            let blocks = x.count / (c.blockSize * c.kvHeads * c.headDim)
            for b in 0..<blocks {
                for s in 0..<c.blockSize {
                    for g in 0..<c.kvHeads {
                        let from = ((b * c.blockSize + s) * c.kvHeads + g) * c.headDim
                        let to = ((b * c.kvHeads + g) * c.blockSize + s) * c.headDim
                        for d in 0..<c.headDim { y[to + d] = x[from + d] }
                    }
                }
            }
            return y
        }

        /// `group`: query heads per KV head instead of the base case's 1...3;
        /// `interleaved`: head h reads KV head h % kvHeads (no two adjacent
        /// heads share one) instead of h / group.
        init(rng: inout TestRandom, headDim: Int, dtype: weft_kv_dtype, group: Int? = nil, interleaved: Bool = false) {
            base = AttentionTests.Case(rng: &rng, headDim: headDim)
            if group != nil || interleaved {
                let g = group ?? base.heads / base.kvHeads, kvHeads = base.kvHeads
                base.heads = kvHeads * g
                base.ldq = base.heads * headDim + rng.int(0, 5)
                base.ldo = base.heads * headDim + rng.int(0, 5)
                base.q = rng.floats(base.tokens * base.ldq, scale: 3)
                base.kvHeadOf = (0..<base.heads).map { Int32(interleaved ? $0 % kvHeads : $0 / g) }
            }
            self.dtype = dtype
            keys = Self.headMajor(base.keys, base)
            values = Self.headMajor(base.values, base)
            if dtype != WEFT_KV_F32 {
                let n = keys.count
                keys16 = [UInt16](repeating: 0, count: n)
                values16 = [UInt16](repeating: 0, count: n)
                let convert = dtype == WEFT_KV_F16 ? weft_f32_to_f16_scalar : weft_f32_to_bf16_scalar
                let widen = dtype == WEFT_KV_F16 ? weft_f16_to_f32_scalar : weft_bf16_to_f32_scalar
                convert(keys, &keys16, n)
                convert(values, &values16, n)
                widen(keys16, &keys, n)
                widen(values16, &values, n)
            }
        }

        func run(_ kernel: AttentionKV, split: Int, initial: [Float], dtype override: Int32? = nil) -> [Float] {
            var out = initial
            let c = base
            func go(_ k: UnsafeRawPointer, _ v: UnsafeRawPointer) {
                c.q.withUnsafeBufferPointer { q in
                    c.positions.withUnsafeBufferPointer { pos in
                        c.tableRow.withUnsafeBufferPointer { rows in
                            c.blockTables.withUnsafeBufferPointer { tables in
                                c.kvHeadOf.withUnsafeBufferPointer { kvh in
                                    out.withUnsafeMutableBufferPointer { o in
                                        var args = weft_attention_kv_args(
                                            n_tokens: Int32(c.tokens), n_heads: Int32(c.heads), n_kv_heads: Int32(c.kvHeads),
                                            head_dim: Int32(c.headDim), q: q.baseAddress, ldq: c.ldq, out: o.baseAddress,
                                            ldo: c.ldo, k_cache: k, v_cache: v, kv_dtype: override ?? Int32(dtype.rawValue),
                                            block_size: Int32(c.blockSize), positions: pos.baseAddress,
                                            table_row: rows.baseAddress, block_tables: tables.baseAddress,
                                            max_blocks: Int32(c.maxBlocks), kv_head_of: kvh.baseAddress,
                                            scale: 1 / Float(c.headDim).squareRoot())
                                        kernel(&args, 0, Int32(split))
                                        kernel(&args, Int32(split), Int32(c.tokens * c.heads))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if dtype == WEFT_KV_F32 {
                keys.withUnsafeBytes { k in values.withUnsafeBytes { v in go(k.baseAddress!, v.baseAddress!) } }
            } else {
                keys16.withUnsafeBytes { k in values16.withUnsafeBytes { v in go(k.baseAddress!, v.baseAddress!) } }
            }
            return out
        }

        /// Two-pass softmax in float64 over the widened cache.
        func reference(token t: Int, head h: Int) -> [Double] {
            let c = base
            let g = Int(c.kvHeadOf[h]), context = Int(c.positions[t]) + 1, hd = c.headDim
            let table = Int(c.tableRow[t]) * c.maxBlocks
            func row(_ p: Int) -> Int {
                ((Int(c.blockTables[table + p / c.blockSize]) * c.kvHeads + g) * c.blockSize + p % c.blockSize) * hd
            }
            let scale = Double(1 / Float(hd).squareRoot())
            let scores = (0..<context).map { p in
                (0..<hd).reduce(0.0) { $0 + Double(c.q[t * c.ldq + h * hd + $1]) * Double(keys[row(p) + $1]) } * scale
            }
            let top = scores.max()!
            let weights = scores.map { exp($0 - top) }
            let total = weights.reduce(0, +)
            return (0..<hd).map { d in (0..<context).reduce(0.0) { $0 + weights[$1] * Double(values[row($1) + d]) } / total }
        }
    }

    func testScalarMatchesTwoPassSoftmax() {
        var rng = TestRandom(seed: 41)
        for dtype in [WEFT_KV_F32, WEFT_KV_F16, WEFT_KV_BF16] {
            for headDim in [8, 13, 64] {
                let c = TypedCase(rng: &rng, headDim: headDim, dtype: dtype)
                if dtype != WEFT_KV_F32 {
                    XCTAssertNotEqual(c.keys, TypedCase.headMajor(c.base.keys, c.base), "the 16-bit cache must differ from float32")
                }
                let out = c.run(weft_attention_kv_scalar, split: 0, initial: [Float](repeating: 0, count: c.base.tokens * c.base.ldo))
                for t in 0..<c.base.tokens {
                    for h in 0..<c.base.heads {
                        let want = c.reference(token: t, head: h)
                        for d in 0..<headDim {
                            let got = Double(out[t * c.base.ldo + h * headDim + d])
                            if abs(got - want[d]) > 1e-5 {
                                XCTFail("dtype \(dtype.rawValue) head_dim \(headDim) token \(t) head \(h) d \(d): \(got), float64 \(want[d])")
                                return
                            }
                        }
                    }
                }
            }
        }
    }

    /// A float32 cache in the typed layout gives weft_attention's results on
    /// the same data: the scalar references bit for bit (same operation
    /// order), the SIMD paths within 1e-5 (grouped heads sum in another order).
    func testFloat32CacheMatchesWeftAttention() {
        var rng = TestRandom(seed: 43)
        var paths: [(String, AttentionKV, SIMDPath.Attention)] = [("scalar", weft_attention_kv_scalar, weft_attention_scalar)]
        if weft_isa_detect().rawValue >= WEFT_ISA_AVX2.rawValue { paths.append(("avx2", weft_attention_kv_avx2, weft_attention_avx2)) }
        if weft_isa_detect().rawValue >= WEFT_ISA_AVX512.rawValue { paths.append(("avx512", weft_attention_kv_avx512, weft_attention_avx512)) }
        for headDim in [5, 16, 64] {
            let c = TypedCase(rng: &rng, headDim: headDim, dtype: WEFT_KV_F32)
            let initial = rng.floats(c.base.tokens * c.base.ldo)
            for (name, typed, plain) in paths {
                let got = c.run(typed, split: 1, initial: initial)
                let want = c.base.run(plain, split: 1, initial: initial)
                if name == "scalar" {
                    XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "\(name) head_dim \(headDim)")
                } else {
                    for i in got.indices where !(abs(got[i] - want[i]) <= 1e-5) {
                        XCTFail("\(name) head_dim \(headDim): out[\(i)] = \(got[i]), weft_attention \(want[i])")
                        return
                    }
                }
            }
        }
    }

    func testUnknownDTypeWritesNaN() {
        var rng = TestRandom(seed: 47)
        let c = TypedCase(rng: &rng, headDim: 8, dtype: WEFT_KV_F16)
        let initial = [Float](repeating: 0, count: c.base.tokens * c.base.ldo)
        var paths: [AttentionKV] = [weft_attention_kv_scalar]
        if weft_isa_detect().rawValue >= WEFT_ISA_AVX2.rawValue { paths.append(weft_attention_kv_avx2) }
        for kernel in paths {
            let out = c.run(kernel, split: 0, initial: initial, dtype: 9)
            for t in 0..<c.base.tokens {
                for i in 0..<(c.base.heads * 8) { XCTAssertTrue(out[t * c.base.ldo + i].isNaN) }
            }
        }
    }

    func testAVX2Attention() throws { try checkAttention(Self.require(Self.avx2)) }
    func testAVX512Attention() throws { try checkAttention(Self.require(Self.avx512)) }

    /// Against the scalar reference over the same cache: outputs are convex
    /// combinations of values in [-1, 1], absolute 1e-5; padding untouched.
    private func checkAttention(_ path: Path) {
        var rng = TestRandom(seed: 53)
        for dtype in [WEFT_KV_F32, WEFT_KV_F16, WEFT_KV_BF16] {
            for headDim in [1, 3, 8, 16, 20, 32, 64, 100, 128] {
                for variant in 0..<4 {
                    // The base case (1-3 heads per KV head), 4-8 heads per KV
                    // head (the widest groups, one or two per token), interleaved heads.
                    let c = TypedCase(rng: &rng, headDim: headDim, dtype: dtype,
                                      group: variant == 1 ? rng.int(4, 8) : variant == 2 ? rng.int(9, 12) : nil,
                                      interleaved: variant == 3)
                    let initial = rng.floats(c.base.tokens * c.base.ldo)
                    let split = rng.int(0, c.base.tokens * c.base.heads)
                    let want = c.run(weft_attention_kv_scalar, split: 0, initial: initial)
                    let got = c.run(path.attention, split: split, initial: initial)
                    for idx in got.indices {
                        let inHead = idx % c.base.ldo < c.base.heads * headDim
                        let ok = inHead ? abs(got[idx] - want[idx]) <= 1e-5 : got[idx].bitPattern == want[idx].bitPattern
                        if !ok {
                            XCTFail("\(path.name) dtype \(dtype.rawValue) head_dim=\(headDim) block_size=\(c.base.blockSize) "
                                    + "heads=\(c.base.heads)/\(c.base.kvHeads): out[\(idx)] = \(got[idx]), scalar \(want[idx])")
                            return
                        }
                    }
                }
            }
        }
    }
}
