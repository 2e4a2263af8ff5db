import CKernels
import XCTest

/// rmsnorm, add_rmsnorm, silu_mul and rope: each SIMD path against the scalar
/// reference, on ragged widths and row strides larger than the rows.
final class RowKernelTests: XCTestCase {
    func testRMSNormAVX512() throws { try checkRMSNorm(SIMDPath.require(.avx512)) }
    func testRMSNormAVX2() throws { try checkRMSNorm(SIMDPath.require(.avx2)) }
    func testSiluMulAVX512() throws { try checkSiluMul(SIMDPath.require(.avx512)) }
    func testSiluMulAVX2() throws { try checkSiluMul(SIMDPath.require(.avx2)) }
    func testRopeAVX512() throws { try checkRope(SIMDPath.require(.avx512)) }
    func testRopeAVX2() throws { try checkRope(SIMDPath.require(.avx2)) }

    /// Relative 1e-5: the only difference is the order of the sum of squares.
    private func checkRMSNorm(_ path: SIMDPath) {
        var rng = TestRandom(seed: 3)
        for dim in [1, 2, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257, 1000] {
            let rows = rng.int(1, 4), ld = dim + rng.int(0, 9)
            let x = rng.floats(rows * ld, scale: 3), w = rng.floats(dim)
            let initial = rng.floats(rows * ld)
            var want = initial, got = initial
            weft_rmsnorm_scalar(x, ld, w, &want, ld, Int32(rows), Int32(dim), 1e-6)
            path.rmsnorm(x, ld, w, &got, ld, Int32(rows), Int32(dim), 1e-6)
            assertClose(got, want, dim: dim, ld: ld, relative: 1e-5, "\(path.name) rmsnorm dim=\(dim)")

            // Fused residual add: the residual is exact, the normalized output as above.
            let delta = rng.floats(rows * ld)
            var residualWant = rng.floats(rows * ld), residualGot = residualWant
            want = initial
            got = initial
            weft_add_rmsnorm_scalar(&residualWant, ld, delta, ld, w, &want, ld, Int32(rows), Int32(dim), 1e-5)
            path.addRMSNorm(&residualGot, ld, delta, ld, w, &got, ld, Int32(rows), Int32(dim), 1e-5)
            XCTAssertEqual(bits(residualGot), bits(residualWant), "\(path.name) add_rmsnorm residual dim=\(dim)")
            assertClose(got, want, dim: dim, ld: ld, relative: 1e-5, "\(path.name) add_rmsnorm dim=\(dim)")
        }
    }

    /// Relative 1e-6: a vector exp within a few ulp of libm's expf.
    private func checkSiluMul(_ path: SIMDPath) {
        var rng = TestRandom(seed: 5)
        for n in [1, 5, 8, 16, 23, 64, 65, 300] {
            let rows = rng.int(1, 3), ld = n + rng.int(0, 5)
            let gate = rng.floats(rows * ld, scale: 20), up = rng.floats(rows * ld)
            let initial = rng.floats(rows * ld)
            var want = initial, got = initial
            weft_silu_mul_scalar(gate, up, ld, &want, ld, Int32(rows), Int32(n))
            path.siluMul(gate, up, ld, &got, ld, Int32(rows), Int32(n))
            assertClose(got, want, dim: n, ld: ld, relative: 1e-6, "\(path.name) silu_mul n=\(n)")
        }
        // Saturation, overflow of exp(-g), subnormal results, infinities and NaN.
        let gate: [Float] = [0, -0.0, .infinity, -.infinity, .nan, 88, 89, 90, -87, -88, -88.7, -89, -100,
                             -104, -110, 0x1p-133, -0x1p-133, 20, -20, 0.5]
        let up = [Float](repeating: 1.5, count: gate.count)
        var want = [Float](repeating: 0, count: gate.count), got = want
        weft_silu_mul_scalar(gate, up, gate.count, &want, gate.count, 1, Int32(gate.count))
        path.siluMul(gate, up, gate.count, &got, gate.count, 1, Int32(gate.count))
        for i in gate.indices {
            if want[i].isNaN {
                XCTAssertTrue(got[i].isNaN, "\(path.name) silu(\(gate[i])) = \(got[i]), scalar NaN")
            } else {
                XCTAssertEqual(got[i], want[i], accuracy: 1e-6 * abs(want[i]), "\(path.name) silu(\(gate[i]))")
                XCTAssertEqual(got[i].sign, want[i].sign, "\(path.name) silu(\(gate[i])) sign")
            }
        }
    }

    /// Exact: cos/sin come from libm as in the reference and the rotation uses
    /// the same operations (the scalar file is built without FP contraction).
    private func checkRope(_ path: SIMDPath) {
        var rng = TestRandom(seed: 9)
        for headDim in [2, 4, 6, 16, 30, 64, 128, 160, 256] {
            let rows = rng.int(1, 4), heads = rng.int(1, 5), ld = heads * headDim + rng.int(0, 7)
            let invFreq = (0..<(headDim / 2)).map { powf(10_000, -2 * Float($0) / Float(headDim)) }
            let positions = (0..<rows).map { _ in Int32(rng.int(0, 40_000)) }
            var want = rng.floats(rows * ld), got = want
            weft_rope_scalar(&want, ld, Int32(rows), Int32(heads), Int32(headDim), positions, invFreq)
            path.rope(&got, ld, Int32(rows), Int32(heads), Int32(headDim), positions, invFreq)
            XCTAssertEqual(bits(got), bits(want), "\(path.name) rope head_dim=\(headDim) heads=\(heads)")
        }
    }

    /// Columns [0, dim) of each row within `relative` of the reference; the
    /// padding columns [dim, ld) untouched.
    private func assertClose(_ got: [Float], _ want: [Float], dim: Int, ld: Int, relative: Float,
                             _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        for idx in got.indices {
            let ok = idx % ld < dim
                ? abs(got[idx] - want[idx]) <= relative * abs(want[idx]) + 1e-30
                : got[idx].bitPattern == want[idx].bitPattern
            if !ok {
                XCTFail("\(label): element \(idx) (row \(idx / ld), column \(idx % ld)) = \(got[idx]), scalar \(want[idx])",
                        file: file, line: line)
                return
            }
        }
    }
}
