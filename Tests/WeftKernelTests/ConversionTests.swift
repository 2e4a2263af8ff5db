import CKernels
import XCTest

/// bf16 / f16 -> f32: every SIMD path must reproduce the scalar bits exactly,
/// for all 65,536 inputs (zeros, subnormals, inf, quiet and signaling NaN) and
/// for every tail length.
final class ConversionTests: XCTestCase {
    func testScalarReferenceKnownValues() {
        let halves: [UInt16] = [0x0000, 0x8000, 0x3C00, 0xC000, 0x0001, 0x03FF, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01]
        var out = [Float](repeating: 0, count: halves.count)
        weft_f16_to_f32_scalar(halves, &out, halves.count)
        XCTAssertEqual(out[0].bitPattern, 0x0000_0000)
        XCTAssertEqual(out[1].bitPattern, 0x8000_0000)  // negative zero
        XCTAssertEqual(out[2], 1)
        XCTAssertEqual(out[3], -2)
        XCTAssertEqual(out[4], 0x1p-24)                 // smallest subnormal
        XCTAssertEqual(out[5], Float(0x3FF) * 0x1p-24)  // largest subnormal
        XCTAssertEqual(out[6], 65504)
        XCTAssertEqual(out[7], .infinity)
        XCTAssertEqual(out[8], -.infinity)
        XCTAssertEqual(out[9].bitPattern, 0x7FC0_0000)  // quiet NaN
        XCTAssertEqual(out[10].bitPattern, 0x7F80_2000) // signaling NaN keeps its payload

        let brains: [UInt16] = [0x3F80, 0x8000, 0x7F80, 0x0001, 0x7FC1]
        var b = [Float](repeating: 0, count: brains.count)
        weft_bf16_to_f32_scalar(brains, &b, brains.count)
        XCTAssertEqual(bits(b), [0x3F80_0000, 0x8000_0000, 0x7F80_0000, 0x0001_0000, 0x7FC1_0000])
    }

    func testF16AVX512() throws { try checkF16(SIMDPath.require(.avx512)) }
    func testF16AVX2() throws { try checkF16(SIMDPath.require(.avx2)) }
    func testBF16AVX512() throws { try checkBF16(SIMDPath.require(.avx512)) }
    func testBF16AVX2() throws { try checkBF16(SIMDPath.require(.avx2)) }

    private func checkF16(_ path: SIMDPath) {
        check(path.name + " f16", simd: path.f16ToF32, scalar: weft_f16_to_f32_scalar)
    }

    private func checkBF16(_ path: SIMDPath) {
        check(path.name + " bf16", simd: path.bf16ToF32, scalar: weft_bf16_to_f32_scalar)
    }

    private func check(_ label: String, simd: SIMDPath.Conversion, scalar: SIMDPath.Conversion) {
        // Every 16-bit pattern, then random patterns at odd offsets and lengths.
        let all = (0...0xFFFF).map { UInt16($0) }
        var expected = [Float](repeating: 0, count: all.count)
        var actual = [Float](repeating: 0, count: all.count)
        scalar(all, &expected, all.count)
        simd(all, &actual, all.count)
        let e = bits(expected), a = bits(actual)
        for i in all.indices where e[i] != a[i] {
            XCTFail("\(label): input 0x\(String(all[i], radix: 16)) gave 0x\(String(a[i], radix: 16)), scalar 0x\(String(e[i], radix: 16))")
            return
        }

        var rng = TestRandom(seed: 7)
        let source = (0..<200).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        for offset in 0..<3 {
            for length in 0...(200 - 3) {
                let sentinel = Float(bitPattern: 0x7FBA_DBAD)
                var want = [Float](repeating: sentinel, count: length + 4)
                var got = want
                source.withUnsafeBufferPointer { src in
                    scalar(src.baseAddress! + offset, &want, length)
                    simd(src.baseAddress! + offset, &got, length)
                }
                if bits(want) != bits(got) {
                    XCTFail("\(label): offset \(offset), length \(length) differs from scalar (or wrote past the end)")
                    return
                }
            }
        }
    }
}
