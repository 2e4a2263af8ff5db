import CKernels
import XCTest

/// The packed GEMM: each SIMD path against the scalar reference on ragged
/// shapes, panel sub-ranges [n0, n1), accumulate = 1 and strides larger than
/// the rows; the scalar reference itself against a float64 triple loop.
final class GemmTests: XCTestCase {
    func testPackingLayout() {
        let nr = Int(weft_gemm_nr())
        XCTAssertEqual(weft_gemm_packed_floats(1, 3), nr * 3)
        XCTAssertEqual(weft_gemm_packed_floats(Int32(nr + 1), 2), 2 * nr * 2)
        // Packed element (panel p, k index kk, row j) is W[p*NR + j][kk]; rows past n are zero.
        let n = nr + 3, k = 5
        let w = PackedWeight(n: n, k: k, rows: (0..<(n * k)).map { Float($0) })
        for p in 0..<2 {
            for kk in 0..<k {
                for j in 0..<nr {
                    let row = p * nr + j
                    let expected: Float = row < n ? w.rows[row * k + kk] : 0
                    XCTAssertEqual(w.packed[p * nr * k + kk * nr + j], expected)
                }
            }
        }
    }

    func testScalarMatchesFloat64() {
        var rng = TestRandom(seed: 11)
        for (m, n, k) in [(1, 1, 1), (3, 33, 17), (5, 70, 129), (9, 64, 300)] {
            let w = PackedWeight(n: n, k: k, rows: rng.floats(n * k))
            let x = rng.floats(m * k)
            var y = [Float](repeating: 0, count: m * n)
            weft_gemm_packed_scalar(Int32(m), 0, Int32(n), Int32(k), x, k, w.packed, &y, n, 0)
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0, mag = 0.0
                    for kk in 0..<k {
                        sum += Double(x[i * k + kk]) * Double(w.rows[j * k + kk])
                        mag += abs(Double(x[i * k + kk]) * Double(w.rows[j * k + kk]))
                    }
                    XCTAssertEqual(Double(y[i * n + j]), sum, accuracy: 1.2e-7 * Double(k + 1) * mag + 1e-30,
                                   "m=\(m) n=\(n) k=\(k) at (\(i), \(j))")
                }
            }
        }
    }

    func testAVX512() throws { try checkShapes(SIMDPath.require(.avx512)) }
    func testAVX2() throws { try checkShapes(SIMDPath.require(.avx2)) }

    private func checkShapes(_ path: SIMDPath) {
        // Edges of the micro-kernels (MR = 6 or 14 rows, 16- or 32-column
        // slices), K blocks (256) and packed-x blocks, then random shapes.
        var shapes: [(m: Int, n: Int, k: Int)] = [
            (1, 1, 1), (1, 32, 1), (1, 33, 7), (2, 31, 5), (4, 64, 2), (5, 64, 17), (6, 96, 256),
            (7, 100, 257), (8, 48, 513), (13, 200, 300), (14, 64, 512), (15, 65, 513),
            (16, 128, 1000), (28, 40, 64), (29, 70, 33), (43, 17, 300), (64, 256, 600),
            (100, 96, 129), (250, 33, 70), (600, 40, 20),
        ]
        var rng = TestRandom(seed: 2024)
        for _ in 0..<25 { shapes.append((rng.int(1, 40), rng.int(1, 300), rng.int(1, 700))) }
        for (index, shape) in shapes.enumerated() {
            for accumulate in [false, true] {
                checkOne(path, m: shape.m, n: shape.n, k: shape.k, accumulate: accumulate, rng: &rng,
                         split: index % 2 == 1)
            }
        }
    }

    typealias GemmXP = @convention(c) (Int32, Int32, Int32, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                       UnsafeMutablePointer<Float>?, Int, Int32) -> Void

    func testPrepackedXScalar() { checkPrepackedX("scalar", weft_gemm_xp_scalar, mr: Int(weft_gemm_mr_scalar())) }
    func testPrepackedXAVX2() throws {
        _ = try SIMDPath.require(.avx2)
        checkPrepackedX("avx2", weft_gemm_xp_avx2, mr: Int(weft_gemm_mr_avx2()))
    }
    func testPrepackedXAVX512() throws {
        _ = try SIMDPath.require(.avx512)
        checkPrepackedX("avx512", weft_gemm_xp_avx512, mr: Int(weft_gemm_mr_avx512()))
    }

    /// weft_gemm_xp_<isa> (one K chunk against x packed once in balanced row
    /// groups of at most MR rows, group g at row0(g) * kc, element (kk, i) at
    /// [kk * rows + i]) against the scalar packed GEMM on ragged m (one to
    /// many groups, groups of unequal size), n (partial panels and slices) and
    /// kc, with and without load_c; nothing written past n or the last row.
    private func checkPrepackedX(_ name: String, _ xp: GemmXP, mr: Int) {
        var rng = TestRandom(seed: 77)
        var shapes: [(m: Int, n: Int, k: Int)] = [
            (1, 1, 1), (1, 33, 5), (5, 32, 256), (6, 16, 7), (7, 17, 256), (13, 100, 31), (15, 64, 200),
            (29, 70, 256), (40, 257, 96), (97, 45, 13), (512, 40, 20), (515, 33, 9),
        ]
        for _ in 0..<12 { shapes.append((rng.int(1, 120), rng.int(1, 300), rng.int(1, 300))) }
        for (m, n, k) in shapes {
            // Pack x as the contract says (the groups of weft_gemm_group).
            let x = rng.floats(m * k)
            var packed = [Float](repeating: .nan, count: m * k)
            let groups = (m + mr - 1) / mr, base = m / groups, extra = m % groups
            var row0 = 0
            for g in 0..<groups {
                let rows = base + (g < extra ? 1 : 0)
                for kk in 0..<k { for i in 0..<rows { packed[row0 * k + kk * rows + i] = x[(row0 + i) * k + kk] } }
                row0 += rows
            }
            XCTAssertEqual(row0, m)
            let w = PackedWeight(n: n, k: k, rows: rng.floats(n * k))
            var magnitude = [Float](repeating: 0, count: m * n)
            weft_gemm_packed_scalar(Int32(m), 0, Int32(n), Int32(k), x.magnitudes, k,
                                    PackedWeight(n: n, k: k, rows: w.rows.magnitudes).packed, &magnitude, n, 0)
            for loadC: Int32 in [0, 1] {
                let ldy = n + rng.int(0, 3)
                let initial = rng.floats(m * ldy + 4)
                var want = initial, got = initial
                weft_gemm_packed_scalar(Int32(m), 0, Int32(n), Int32(k), x, k, w.packed, &want, ldy, loadC)
                xp(Int32(m), Int32(n), Int32(k), packed, w.packed, &got, ldy, loadC)
                let label = "\(name) xp m=\(m) n=\(n) kc=\(k) load_c=\(loadC)"
                var failures = 0
                for i in 0..<m {
                    for j in 0..<ldy {
                        let idx = i * ldy + j
                        if j >= n {
                            if got[idx].bitPattern != initial[idx].bitPattern && failures < 3 { failures += 1; XCTFail("\(label): wrote column \(j) >= n") }
                            continue
                        }
                        let bound = magnitude[i * n + j] + (loadC != 0 ? abs(initial[idx]) : 0)
                        let tolerance = 1.2e-7 * Float(k + 2) * bound + 1e-30
                        if !(abs(got[idx] - want[idx]) <= tolerance) && failures < 3 {
                            failures += 1
                            XCTFail("\(label): y[\(i)][\(j)] = \(got[idx]), scalar \(want[idx]), tolerance \(tolerance)")
                        }
                    }
                }
                XCTAssertEqual(bits(Array(got[(m * ldy)...])), bits(Array(initial[(m * ldy)...])), "\(label): wrote past y")
            }
        }
    }

    func testEmptySumAVX512() throws { try checkEmptySum(SIMDPath.require(.avx512)) }
    func testEmptySumAVX2() throws { try checkEmptySum(SIMDPath.require(.avx2)) }

    /// k = 0: y becomes 0 (or stays as it is when accumulating), as in the reference.
    private func checkEmptySum(_ path: SIMDPath) {
        for accumulate: Int32 in [0, 1] {
            var want = [Float](repeating: 3, count: 5 * 40), got = want
            let w = [Float](repeating: 0, count: 64)
            weft_gemm_packed_scalar(5, 0, 40, 0, [], 0, w, &want, 40, accumulate)
            path.gemm(5, 0, 40, 0, [], 0, w, &got, 40, accumulate)
            XCTAssertEqual(got, want, "\(path.name) k = 0, accumulate \(accumulate)")
        }
    }

    /// y = x . W^T over [0, n), optionally as two calls [0, cut) and [cut, n)
    /// split at a panel boundary, compared with the scalar reference.
    private func checkOne(_ path: SIMDPath, m: Int, n: Int, k: Int, accumulate: Bool,
                          rng: inout TestRandom, split: Bool) {
        let nr = Int(weft_gemm_nr())
        let ldx = k + rng.int(0, 5), ldy = n + rng.int(0, 5)
        let w = PackedWeight(n: n, k: k, rows: rng.floats(n * k))
        let x = rng.floats(m * ldx)
        let initial = rng.floats(m * ldy + 4)  // + 4: nothing may be written past the last row
        var want = initial, got = initial
        // Per-output bound on the rounding of a length-k sum: gamma_k * sum |x w| (+ |y| when accumulating).
        var magnitude = [Float](repeating: 0, count: m * ldy)
        weft_gemm_packed_scalar(Int32(m), 0, Int32(n), Int32(k), x.magnitudes, ldx,
                                PackedWeight(n: n, k: k, rows: w.rows.magnitudes).packed, &magnitude, ldy, 0)
        let panels = (n + nr - 1) / nr
        let cut = split ? min(n, rng.int(0, panels) * nr) : 0
        let acc: Int32 = accumulate ? 1 : 0
        for (n0, n1) in [(0, cut), (cut, n)] where n1 > n0 {
            weft_gemm_packed_scalar(Int32(m), Int32(n0), Int32(n1), Int32(k), x, ldx, w.packed, &want, ldy, acc)
            path.gemm(Int32(m), Int32(n0), Int32(n1), Int32(k), x, ldx, w.packed, &got, ldy, acc)
        }
        let label = "\(path.name) m=\(m) n=\(n) k=\(k) accumulate=\(accumulate) cut=\(cut)"
        for i in 0..<m {
            for j in 0..<ldy {
                let idx = i * ldy + j
                if j >= n {
                    XCTAssertEqual(got[idx].bitPattern, initial[idx].bitPattern, "\(label): wrote column \(j) >= n")
                    continue
                }
                let bound = magnitude[idx] + (accumulate ? abs(initial[idx]) : 0)
                let tolerance = 1.2e-7 * Float(k + 2) * bound + 1e-30
                if abs(got[idx] - want[idx]) > tolerance {
                    XCTFail("\(label): y[\(i)][\(j)] = \(got[idx]), scalar \(want[idx]), tolerance \(tolerance)")
                    return
                }
            }
        }
        XCTAssertEqual(bits(Array(got[(m * ldy)...])), bits(Array(initial[(m * ldy)...])), "\(label): wrote past y")
    }
}
