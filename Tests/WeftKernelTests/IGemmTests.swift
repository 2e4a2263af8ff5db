import CKernels
import XCTest

/// weft_igemm (integer prefill over block formats): the scalar reference equals
/// the decode scalar path (weft_qgemv_scalar) bit for bit; every SIMD path the
/// CPU has is within float32 rounding of it and of a float64 product of the
/// dequantized weights and activations, on ragged shapes, with and without a pool.
final class IGemmTests: XCTestCase {
    static let formats: [(Int32, String)] = [(8, "Q8_0"), (2, "Q4_0"), (3, "Q4_1"), (12, "Q4_K"), (14, "Q6_K")]

    typealias Path = @convention(c) (Int32, Int32, Int32, Int32, UnsafeRawPointer?, Int, UnsafeRawPointer?,
                                     UnsafeMutablePointer<Float>?, Int, UnsafeMutableRawPointer?, Int, OpaquePointer?) -> Int32

    /// The SIMD paths this CPU runs.
    static var simdPaths: [(String, Path)] {
        var paths: [(String, Path)] = []
        if weft_igemm_has_avx2() != 0 { paths.append(("avx2", weft_igemm_avx2)) }
        if weft_igemm_has_avx512() != 0 { paths.append(("avx512", weft_igemm_avx512)) }
        return paths
    }

    /// n weight rows: quantized random floats (with outliers) for the 32-element
    /// formats, random bytes with small finite fp16 scales for the k-quants.
    static func weights(_ type: Int32, n: Int, k: Int, _ rng: inout TestRandom) -> [UInt8] {
        let rowBytes = weft_wtype_row_bytes(type, Int64(k))
        var w = [UInt8](repeating: 0, count: rowBytes * n)
        if type == 12 || type == 14 {
            for i in w.indices { w[i] = UInt8(truncatingIfNeeded: rng.next()) }
            let blockBytes = Int(weft_wtype_block_bytes(type))
            let offsets = type == 14 ? [208] : [0, 2]
            for b in 0..<(w.count / blockBytes) {
                for o in offsets {
                    let h = weft_fp32_to_fp16(Float(rng.int(1, 100)) * 1e-3)
                    w[b * blockBytes + o] = UInt8(h & 0xff)
                    w[b * blockBytes + o + 1] = UInt8(h >> 8)
                }
            }
            return w
        }
        var row = [Float](repeating: 0, count: k)
        w.withUnsafeMutableBytes { wb in
            for j in 0..<n {
                for i in 0..<k { row[i] = rng.float(1) * (rng.int(0, 40) == 0 ? 10 : 1) }
                XCTAssertEqual(weft_quantize_row(type, row, wb.baseAddress! + j * rowBytes, Int64(k)), 0)
            }
        }
        return w
    }

    /// Activation rows quantized by weft_igemm_quantize, stride `ldq` bytes.
    static func quantize(_ type: Int32, m: Int, k: Int, x: [Float], ldq: Int, pool: OpaquePointer?) -> [UInt8] {
        var xq = [UInt8](repeating: 0xAB, count: ldq * m)
        xq.withUnsafeMutableBytes { q in
            XCTAssertEqual(weft_igemm_quantize(type, Int32(m), Int32(k), x, k, q.baseAddress, ldq, pool), 0)
        }
        return xq
    }

    /// The quantized activations back to float32 (Q8_0, Q8_1 or Q8_K).
    static func dequantizedActivations(_ type: Int32, _ xq: [UInt8], m: Int, k: Int, ldq: Int) -> [Float] {
        var out = [Float](repeating: 0, count: m * k)
        xq.withUnsafeBytes { q in
            out.withUnsafeMutableBufferPointer { o in
                for i in 0..<m {
                    let src = q.baseAddress! + i * ldq, dst = o.baseAddress! + i * k
                    switch weft_igemm_act_type(type) {
                    case 8: weft_dequantize_row_q8_0(src.assumingMemoryBound(to: weft_block_q8_0.self), dst, Int64(k))
                    case 9: weft_dequantize_row_q8_1(src.assumingMemoryBound(to: weft_block_q8_1.self), dst, Int64(k))
                    default: weft_dequantize_row_q8_K(src.assumingMemoryBound(to: weft_block_q8_K.self), dst, Int64(k))
                    }
                }
            }
        }
        return out
    }

    static func run(_ path: Path, _ type: Int32, m: Int, n: Int, k: Int, xq: [UInt8], ldq: Int, w: [UInt8], ldy: Int,
                    pool: OpaquePointer?) -> (Int32, [Float]) {
        var y = [Float](repeating: -7, count: m * ldy)
        // The scratch at an odd offset, with a guard tail that must stay untouched.
        let need = weft_igemm_scratch_bytes(type, Int32(m), Int32(n), Int32(k), pool.map { weft_pool_size($0) } ?? 1)
        XCTAssertGreaterThan(need, 0)
        var scratch = [UInt8](repeating: 0x5A, count: need + 1 + 64)
        let rc = xq.withUnsafeBytes { q in
            w.withUnsafeBytes { wb in
                scratch.withUnsafeMutableBytes { sb in
                    path(type, Int32(m), Int32(n), Int32(k), q.baseAddress, ldq, wb.baseAddress, &y, ldy, sb.baseAddress! + 1,
                         need, pool)
                }
            }
        }
        XCTAssertTrue(scratch[0] == 0x5A && scratch[(need + 1)...].allSatisfy { $0 == 0x5A }, "scratch written out of bounds")
        return (rc, y)
    }

    func testScalarEqualsDecodeAndSIMDWithinRounding() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 0x16E_0001)
        // (m, n, k): ragged against every tile (4 x 2 .. 4 x 4) and, at k = 8192 and
        // 12288, split in several cache pieces over k.
        let shapes: [(Int, Int, Int)] = [(1, 1, 256), (17, 13, 256), (5, 9, 512), (33, 70, 768), (16, 6, 1024),
                                         (3, 37, 8192), (21, 5, 12288)]
        for (type, name) in Self.formats {
            for (m, n, k) in shapes {
                let w = Self.weights(type, n: n, k: k, &rng)
                let x = (0..<(m * k)).map { _ in rng.float(2) * (rng.int(0, 60) == 0 ? 6 : 1) }
                let rowq = weft_igemm_act_row_bytes(type, Int32(k))
                XCTAssertGreaterThan(rowq, 0)
                let ldq = rowq + 8 * (m % 2)   // a padded stride on odd m
                let ldy = n + (n % 3)
                let xq = Self.quantize(type, m: m, k: k, x: x, ldq: ldq, pool: pool)
                let label = "\(name) m=\(m) n=\(n) k=\(k)"

                // Decode scalar path on the same float rows (it quantizes to the same blocks).
                var decode = [Float](repeating: 0, count: m * n)
                var scratch = [UInt8](repeating: 0, count: weft_qgemv_scratch_bytes(type, Int32(m), Int32(k)))
                w.withUnsafeBytes { wb in
                    XCTAssertEqual(weft_qgemv_scalar(type, Int32(m), Int32(n), Int32(k), x, k, wb.baseAddress, &decode, n,
                                                     &scratch, nil), 0, label)
                }
                let (rc, scalar) = Self.run(weft_igemm_scalar, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: ldy,
                                            pool: pool)
                XCTAssertEqual(rc, 0, label)
                var mismatches = 0
                for i in 0..<m {
                    for j in 0..<n where scalar[i * ldy + j].bitPattern != decode[i * n + j].bitPattern { mismatches += 1 }
                    for j in n..<ldy { XCTAssertEqual(scalar[i * ldy + j], -7, "\(label): wrote past n") }
                }
                XCTAssertEqual(mismatches, 0, "\(label): scalar igemm differs from weft_qgemv_scalar")

                // float64 of the dequantized weights x dequantized activations.
                let wf = (0..<n).flatMap { j -> [Float] in
                    var row = [Float](repeating: 0, count: k)
                    w.withUnsafeBytes { wb in
                        _ = weft_dequantize_row(type, wb.baseAddress! + j * Int(weft_wtype_row_bytes(type, Int64(k))), &row,
                                                Int64(k))
                    }
                    return row
                }
                let af = Self.dequantizedActivations(type, xq, m: m, k: k, ldq: ldq)
                var ref = [Double](repeating: 0, count: m * n), mag = [Double](repeating: 0, count: m * n)
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0, a = 0.0
                        for l in 0..<k {
                            let p = Double(af[i * k + l]) * Double(wf[j * k + l])
                            s += p
                            a += abs(p)
                        }
                        ref[i * n + j] = s
                        mag[i * n + j] = a
                    }
                }
                if type == 3 {
                    // Q4_1's min term uses the activation block's fp16 s = d * sum(q)
                    // (as ggml does), not the sum of the dequantized values.
                    let wrow = Int(weft_wtype_row_bytes(type, Int64(k)))
                    for i in 0..<m {
                        for j in 0..<n {
                            for b in 0..<(k / 32) {
                                let wo = j * wrow + b * 20, ao = i * ldq + b * 36
                                let mw = Double(weft_fp16_to_fp32(UInt16(w[wo + 2]) | UInt16(w[wo + 3]) << 8))
                                let dy = Double(weft_fp16_to_fp32(UInt16(xq[ao]) | UInt16(xq[ao + 1]) << 8))
                                let sy = Double(weft_fp16_to_fp32(UInt16(xq[ao + 2]) | UInt16(xq[ao + 3]) << 8))
                                var qsum = 0
                                for l in 0..<32 { qsum += Int(Int8(bitPattern: xq[ao + 4 + l])) }
                                ref[i * n + j] += mw * (sy - Double(Float(dy)) * Double(qsum))
                            }
                        }
                    }
                }
                var bad = 0
                for i in 0..<m {
                    for j in 0..<n where abs(Double(scalar[i * ldy + j]) - ref[i * n + j]) > 1e-5 * mag[i * n + j] + 1e-30 {
                        bad += 1
                    }
                }
                XCTAssertEqual(bad, 0, "\(label): scalar igemm vs float64")

                for (pname, path) in Self.simdPaths {
                    let (rc1, one) = Self.run(path, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: ldy, pool: nil)
                    let (rc2, two) = Self.run(path, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: ldy, pool: pool)
                    XCTAssertEqual(rc1, 0, "\(label) \(pname)")
                    XCTAssertEqual(rc2, 0, "\(label) \(pname)")
                    XCTAssertEqual(bits(one), bits(two), "\(label) \(pname): thread split changed the result")
                    var far = 0, farRef = 0
                    for i in 0..<m {
                        for j in 0..<n {
                            let v = Double(one[i * ldy + j])
                            if abs(v - Double(scalar[i * ldy + j])) > 1e-5 * mag[i * n + j] + 1e-30 { far += 1 }
                            if abs(v - ref[i * n + j]) > 1e-5 * mag[i * n + j] + 1e-30 { farRef += 1 }
                        }
                        for j in n..<ldy { XCTAssertEqual(one[i * ldy + j], -7, "\(label) \(pname): wrote past n") }
                    }
                    XCTAssertEqual(far, 0, "\(label) \(pname): vs scalar igemm")
                    XCTAssertEqual(farRef, 0, "\(label) \(pname): vs float64")
                }
            }
        }
    }

    func testDispatchMatchesAPath() throws {
        var rng = TestRandom(seed: 0x16E_0002)
        let (m, n, k) = (9, 11, 512)
        for (type, name) in Self.formats {
            let w = Self.weights(type, n: n, k: k, &rng)
            let x = rng.floats(m * k, scale: 1)
            let ldq = weft_igemm_act_row_bytes(type, Int32(k))
            let xq = Self.quantize(type, m: m, k: k, x: x, ldq: ldq, pool: nil)
            let (rc, y) = Self.run(weft_igemm, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: n, pool: nil)
            XCTAssertEqual(rc, 0, name)
            var candidates = [Self.run(weft_igemm_scalar, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: n, pool: nil).1]
            for (_, path) in Self.simdPaths {
                candidates.append(Self.run(path, type, m: m, n: n, k: k, xq: xq, ldq: ldq, w: w, ldy: n, pool: nil).1)
            }
            XCTAssertTrue(candidates.contains { bits($0) == bits(y) }, "\(name): weft_igemm equals none of the paths")
        }
    }

    func testQuantizeMatchesReferenceQuantizers() {
        var rng = TestRandom(seed: 0x16E_0003)
        let (m, k) = (3, 512)
        let x = rng.floats(m * k, scale: 3)
        for (type, name) in Self.formats {
            let ldq = weft_igemm_act_row_bytes(type, Int32(k))
            let xq = Self.quantize(type, m: m, k: k, x: x, ldq: ldq, pool: nil)
            var ref = [UInt8](repeating: 0, count: ldq * m)
            ref.withUnsafeMutableBytes { r in
                for i in 0..<m {
                    let dst = r.baseAddress! + i * ldq
                    x.withUnsafeBufferPointer { xb in
                        let src = xb.baseAddress! + i * k
                        switch weft_igemm_act_type(type) {
                        case 8: weft_quantize_row_q8_0(src, dst.assumingMemoryBound(to: weft_block_q8_0.self), Int64(k))
                        case 9: weft_quantize_row_q8_1(src, dst.assumingMemoryBound(to: weft_block_q8_1.self), Int64(k))
                        default: weft_quantize_row_q8_K_scalar(src, dst.assumingMemoryBound(to: weft_block_q8_K.self), Int64(k))
                        }
                    }
                }
            }
            XCTAssertEqual(xq, ref, name)
            XCTAssertEqual(ldq, (k / (weft_igemm_act_type(type) == 15 ? 256 : 32)) *
                               weft_qtype_block_bytes(weft_igemm_act_type(type)), name)
        }
    }

    func testRejectsBadArguments() {
        let k = 256
        var w = [UInt8](repeating: 0, count: 4096), xq = [UInt8](repeating: 0, count: 4096)
        var y = [Float](repeating: 5, count: 64)
        let ldq = weft_igemm_act_row_bytes(8, Int32(k))
        var scratch = [UInt8](repeating: 0, count: 1 << 20)
        let need = weft_igemm_scratch_bytes(8, 2, 2, 256, 1)
        func call(type: Int32 = 8, m: Int32 = 2, n: Int32 = 2, k: Int32 = 256, ldq: Int = ldq, ldy: Int = 2,
                  nullW: Bool = false, scratchBytes: Int = 1 << 20) -> Int32 {
            w.withUnsafeBytes { wb in
                xq.withUnsafeBytes { q in
                    weft_igemm(type, m, n, k, q.baseAddress, ldq, nullW ? nil : wb.baseAddress, &y, ldy, &scratch,
                               scratchBytes, nil)
                }
            }
        }
        XCTAssertEqual(call(), 0)
        y = [Float](repeating: 5, count: 64)
        XCTAssertEqual(call(type: 0), -1, "F32")
        XCTAssertEqual(call(type: 13), -1, "Q5_K is not taken")
        XCTAssertEqual(call(type: 99), -1, "unknown")
        XCTAssertEqual(call(k: 48), -1, "k not a multiple of 32")
        XCTAssertEqual(call(type: 12, k: 128), -1, "k-quant k not a multiple of 256")
        XCTAssertEqual(call(k: 0), -1)
        XCTAssertEqual(call(m: 0), -1)
        XCTAssertEqual(call(n: -1), -1)
        XCTAssertEqual(call(ldq: ldq - 1), -1, "short activation stride")
        XCTAssertEqual(call(ldy: 1), -1, "short output stride")
        XCTAssertEqual(call(nullW: true), -1)
        XCTAssertEqual(call(scratchBytes: need - 1), -1, "short scratch")
        XCTAssertEqual(y, [Float](repeating: 5, count: 64), "a rejected call wrote")
        XCTAssertEqual(call(scratchBytes: need), 0)
        y = [Float](repeating: 5, count: 64)
        XCTAssertEqual(weft_igemm_act_row_bytes(13, 256), 0)
        XCTAssertEqual(weft_igemm_scratch_bytes(13, 2, 2, 256, 1), 0)
        XCTAssertEqual(weft_igemm_scratch_bytes(8, 0, 2, 256, 1), 0)
        XCTAssertEqual(weft_igemm_scratch_bytes(8, 2, 2, 256, 0), 0)
        for (type, name) in Self.formats {
            for k in [256, 2048, 8192] {
                var last = 0
                for m in [1, 2, 3, 4, 5, 8, 16, 64, 100, 200, 512, 1000, 4096] {
                    let b = weft_igemm_scratch_bytes(type, Int32(m), 64, Int32(k), 2)
                    XCTAssertGreaterThanOrEqual(b, last, "\(name) k=\(k) m=\(m): scratch shrank as m grew")
                    last = b
                }
            }
        }
        XCTAssertEqual(weft_igemm_act_row_bytes(8, 40), 0)
        XCTAssertEqual(weft_igemm_supported(13), 0)
        XCTAssertEqual(weft_igemm_supported(3), 1)
        var x = [Float](repeating: 1, count: 256)
        XCTAssertEqual(weft_igemm_quantize(8, 1, 256, &x, 255, &xq, ldq, nil), -1, "short ldx")
        XCTAssertEqual(weft_igemm_quantize(13, 1, 256, &x, 256, &xq, ldq, nil), -1, "Q5_K")
    }
}
