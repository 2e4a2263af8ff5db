import CKernels
import Foundation
import XCTest

private let quantFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/quant")

/// One block format as raw bytes: its quantizer, and the dot product of each path.
/// Immutable after construction (lets holding C-function wrappers), hence @unchecked.
private struct QuantFormat: @unchecked Sendable {
    typealias Dot = (Int32, UnsafeRawPointer, UnsafeRawPointer) -> Float

    let name: String
    let type: weft_qtype
    let blockBytes: Int
    let activationBlockBytes: Int
    let quantize: (UnsafePointer<Float>, UnsafeMutableRawPointer, Int64) -> Void
    let quantizeActivations: (UnsafePointer<Float>, UnsafeMutableRawPointer, Int64) -> Void
    let dequantize: (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int64) -> Void
    let dots: [String: Dot]  // "scalar", "avx2", "avx512", "avx512vnni"

    static let q8_0 = QuantFormat(
        name: "q8_0", type: WEFT_QTYPE_Q8_0, blockBytes: 34, activationBlockBytes: 34,
        quantize: { weft_quantize_row_q8_0($0, $1.assumingMemoryBound(to: weft_block_q8_0.self), $2) },
        quantizeActivations: { weft_quantize_row_q8_0($0, $1.assumingMemoryBound(to: weft_block_q8_0.self), $2) },
        dequantize: { weft_dequantize_row_q8_0($0.assumingMemoryBound(to: weft_block_q8_0.self), $1, $2) },
        dots: dotTable(weft_vec_dot_q8_0_q8_0_scalar, weft_vec_dot_q8_0_q8_0_avx2,
                       weft_vec_dot_q8_0_q8_0_avx512, weft_vec_dot_q8_0_q8_0_avx512vnni))

    static let q4_0 = QuantFormat(
        name: "q4_0", type: WEFT_QTYPE_Q4_0, blockBytes: 18, activationBlockBytes: 34,
        quantize: { weft_quantize_row_q4_0($0, $1.assumingMemoryBound(to: weft_block_q4_0.self), $2) },
        quantizeActivations: { weft_quantize_row_q8_0($0, $1.assumingMemoryBound(to: weft_block_q8_0.self), $2) },
        dequantize: { weft_dequantize_row_q4_0($0.assumingMemoryBound(to: weft_block_q4_0.self), $1, $2) },
        dots: dotTable(weft_vec_dot_q4_0_q8_0_scalar, weft_vec_dot_q4_0_q8_0_avx2,
                       weft_vec_dot_q4_0_q8_0_avx512, weft_vec_dot_q4_0_q8_0_avx512vnni))

    static let q4_1 = QuantFormat(
        name: "q4_1", type: WEFT_QTYPE_Q4_1, blockBytes: 20, activationBlockBytes: 36,
        quantize: { weft_quantize_row_q4_1($0, $1.assumingMemoryBound(to: weft_block_q4_1.self), $2) },
        quantizeActivations: { weft_quantize_row_q8_1($0, $1.assumingMemoryBound(to: weft_block_q8_1.self), $2) },
        dequantize: { weft_dequantize_row_q4_1($0.assumingMemoryBound(to: weft_block_q4_1.self), $1, $2) },
        dots: dotTable(weft_vec_dot_q4_1_q8_1_scalar, weft_vec_dot_q4_1_q8_1_avx2,
                       weft_vec_dot_q4_1_q8_1_avx512, weft_vec_dot_q4_1_q8_1_avx512vnni))

    static let all = [q8_0, q4_0, q4_1]

    private typealias D80 = @convention(c) (Int32, UnsafePointer<weft_block_q8_0>?, UnsafePointer<weft_block_q8_0>?) -> Float
    private typealias D40 = @convention(c) (Int32, UnsafePointer<weft_block_q4_0>?, UnsafePointer<weft_block_q8_0>?) -> Float
    private typealias D41 = @convention(c) (Int32, UnsafePointer<weft_block_q4_1>?, UnsafePointer<weft_block_q8_1>?) -> Float
    private static let pathNames = ["scalar", "avx2", "avx512", "avx512vnni"]

    private static func dotTable(_ fs: D80...) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(pathNames, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q8_0.self), a.assumingMemoryBound(to: weft_block_q8_0.self)) }
        }))
    }
    private static func dotTable(_ fs: D40...) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(pathNames, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q4_0.self), a.assumingMemoryBound(to: weft_block_q8_0.self)) }
        }))
    }
    private static func dotTable(_ fs: D41...) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(pathNames, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q4_1.self), a.assumingMemoryBound(to: weft_block_q8_1.self)) }
        }))
    }

    func quantized(_ x: [Float], activations: Bool = false) -> [UInt8] {
        let bb = activations ? activationBlockBytes : blockBytes
        var out = [UInt8](repeating: 0xAA, count: x.count / 32 * bb)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in
                if let s = src.baseAddress, let d = dst.baseAddress {
                    (activations ? quantizeActivations : quantize)(s, d, Int64(x.count))
                }
            }
        }
        return out
    }

    func dequantized(_ q: [UInt8], count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        q.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                if let s = src.baseAddress, let d = dst.baseAddress { dequantize(s, d, Int64(count)) }
            }
        }
        return out
    }

    /// Dot of weight row `row` (of `k` elements) in `w` with activation row `arow` in `a`.
    func dot(_ path: String, k: Int, _ w: [UInt8], row: Int, _ a: [UInt8], arow: Int) -> Float {
        let f = dots[path]!
        return w.withUnsafeBytes { wb in
            a.withUnsafeBytes { ab in
                f(Int32(k), wb.baseAddress! + row * (k / 32) * blockBytes,
                  ab.baseAddress! + arow * (k / 32) * activationBlockBytes)
            }
        }
    }
}

private func fp16(_ bytes: [UInt8], _ offset: Int) -> Float {
    weft_fp16_to_fp32(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)
}

/// The SIMD paths this CPU can run.
private func availablePaths() -> [String] {
    var paths: [String] = []
    if weft_quant_has_avx2() != 0 { paths.append("avx2") }
    if weft_isa_detect().rawValue >= WEFT_ISA_AVX512.rawValue { paths.append("avx512") }
    if weft_quant_has_avx512vnni() != 0 { paths.append("avx512vnni") }
    return paths
}

private func requirePath(_ path: String) throws {
    if !availablePaths().contains(path) {
        throw XCTSkip("the \(path) quant kernels need a CPU with \(path); this one has \(String(cString: weft_isa_name(weft_isa_detect())))")
    }
}

/// Σ over blocks of |dx·dy|·Σ|qx·qy| (+ |m·s| for Q4_1): the magnitude the
/// float32 scale arithmetic of a dot product rounds against.
private func dotMagnitude(_ f: QuantFormat, k: Int, _ w: [UInt8], row: Int, _ a: [UInt8], arow: Int) -> Double {
    var mag = 0.0
    for b in 0..<(k / 32) {
        let wo = (row * (k / 32) + b) * f.blockBytes, ao = (arow * (k / 32) + b) * f.activationBlockBytes
        let qa = f.type == WEFT_QTYPE_Q4_1 ? ao + 4 : ao + 2
        var sumAbs = 0.0
        for j in 0..<32 {
            let qy = Double(Int8(bitPattern: a[qa + j]))
            let qx: Double
            switch f.type {
            case WEFT_QTYPE_Q8_0: qx = Double(Int8(bitPattern: w[wo + 2 + j]))
            case WEFT_QTYPE_Q4_0: qx = Double(Int(j < 16 ? w[wo + 2 + j] & 15 : w[wo + 2 + j - 16] >> 4) - 8)
            default: qx = Double(j < 16 ? w[wo + 4 + j] & 15 : w[wo + 4 + j - 16] >> 4)
            }
            sumAbs += abs(qx * qy)
        }
        mag += abs(Double(fp16(w, wo)) * Double(fp16(a, ao))) * sumAbs
        if f.type == WEFT_QTYPE_Q4_1 { mag += abs(Double(fp16(w, wo + 2)) * Double(fp16(a, ao + 2))) }
    }
    return mag
}

/// Random weights: blocks of uniform values with a random magnitude per block.
private func randomRows(_ rng: inout TestRandom, count: Int) -> [Float] {
    var x: [Float] = []
    x.reserveCapacity(count)
    while x.count < count {
        let scale = Float(pow(10, Double(rng.int(-30, 20)) / 10))
        let shift = rng.int(0, 3) == 0 ? rng.float(scale) : 0  // some blocks off-centre (Q4_1's minimum)
        for _ in 0..<32 { x.append(rng.float(scale) + shift) }
    }
    return x
}

final class QuantTests: XCTestCase {
    // MARK: bit-exactness against the gguf package

    private struct Manifest: Decodable {
        struct Case: Decodable { let name: String; let count: Int; let note: String }
        let cases: [Case]
    }

    private func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: quantFixtures.appendingPathComponent(name))
    }

    private func floats(_ data: Data) -> [Float] {
        let bytes = [UInt8](data)
        var out: [Float] = []
        for i in stride(from: 0, to: bytes.count - 3, by: 4) {
            var word: UInt32 = 0
            for b in 0..<4 { word |= UInt32(bytes[i + b]) << UInt32(8 * b) }
            out.append(Float(bitPattern: word))
        }
        return out
    }

    /// Every fixture input quantized by Weft gives the gguf package's bytes, and
    /// dequantizing them gives the package's floats (bit patterns, NaN included).
    func testQuantizersMatchTheGGUFPackage() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: fixture("cases.json"))
        XCTAssertGreaterThanOrEqual(manifest.cases.count, 8)
        for c in manifest.cases {
            let x = floats(try fixture("\(c.name).f32"))
            XCTAssertEqual(x.count, c.count, c.name)
            for f in QuantFormat.all {
                let want = [UInt8](try fixture("\(c.name).\(f.name)"))
                let got = f.quantized(x)
                XCTAssertEqual(got.count, want.count, "\(c.name) \(f.name) size")
                if got != want {
                    let first = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
                    XCTFail("\(c.name) \(f.name): bytes differ from the gguf package's, first at byte \(first) (\(c.note))")
                }
                let deq = f.dequantized(want, count: x.count)
                XCTAssertEqual(bits(deq), bits(floats(try fixture("\(c.name).\(f.name).deq"))),
                               "\(c.name) \(f.name) dequantized")
            }
        }
    }

    /// Q8_1 (not in the gguf package's quantizer): d and qs as Q8_0, s = fp16(d · Σqs) with the float32 d.
    func testQ8_1IsQ8_0WithItsSum() {
        var rng = TestRandom(seed: 81)
        let x = randomRows(&rng, count: 32 * 40) + [Float](repeating: 0, count: 32)
        let q8_0 = QuantFormat.q8_0.quantized(x)
        let q8_1 = QuantFormat.q4_1.quantized(x, activations: true)
        for b in 0..<(x.count / 32) {
            let o0 = b * 34, o1 = b * 36
            XCTAssertEqual(q8_1[o1..<(o1 + 2)], q8_0[o0..<(o0 + 2)], "block \(b) d")
            XCTAssertEqual(q8_1[(o1 + 4)..<(o1 + 36)], q8_0[(o0 + 2)..<(o0 + 34)], "block \(b) qs")
            let amax = x[(b * 32)..<(b * 32 + 32)].map { abs($0) }.max() ?? 0
            let d = amax / 127
            let sum = (0..<32).reduce(0) { $0 + Int(Int8(bitPattern: q8_1[o1 + 4 + $1])) }
            let s = UInt16(q8_1[o1 + 2]) | UInt16(q8_1[o1 + 3]) << 8
            XCTAssertEqual(s, weft_fp32_to_fp16(Float(sum) * d), "block \(b) s")
        }
    }

    #if !(os(macOS) && arch(x86_64))
    /// fp32 -> fp16 rounds to nearest even as Swift's Float16 (IEEE); fp16 -> fp32 is exact.
    func testHalfConversions() {
        var wrong: [UInt16] = []
        for h in 0...UInt16.max {
            let want = Float(Float16(bitPattern: h)), got = weft_fp16_to_fp32(h)
            if want.isNaN ? !got.isNaN : got.bitPattern != want.bitPattern { wrong.append(h) }
        }
        XCTAssertEqual(wrong, [], "fp16 -> fp32 differs from Float16 for these bit patterns")
        var rng = TestRandom(seed: 16)
        var inputs: [Float] = [0, -0, 1, 65504, 65519.996, 65520, -65520, .infinity, -.infinity,
                               0x1p-24, 0x1p-25, 0x1.000002p-25, 0x1.8p-24, 0x1p-14, 0x1.ffcp-15,
                               1 + 0x1p-11, 1 + 0x1.8p-10, Float.leastNonzeroMagnitude, .greatestFiniteMagnitude]
        for _ in 0..<200_000 {
            // Random bit patterns concentrated on fp16's range and its rounding boundaries.
            let exponent = UInt32(rng.int(100, 145)) << 23
            inputs.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x807f_ffff | exponent))
        }
        let wrongInputs = inputs.filter { !$0.isNaN && weft_fp32_to_fp16($0) != Float16($0).bitPattern }
        XCTAssertEqual(wrongInputs.prefix(10).map { String($0.bitPattern, radix: 16) }, [],
                       "fp32 -> fp16 differs from Float16 for \(wrongInputs.count) of \(inputs.count) inputs")
        XCTAssertTrue(weft_fp16_to_fp32(weft_fp32_to_fp16(.nan)).isNaN)
    }
    #endif

    // MARK: SIMD paths against the scalar reference

    func testAVX2() throws { try requirePath("avx2"); checkDots("avx2") }
    func testAVX512() throws { try requirePath("avx512"); checkDots("avx512") }
    func testAVX512VNNI() throws { try requirePath("avx512vnni"); checkDots("avx512vnni") }

    private func checkDots(_ path: String) {
        var rng = TestRandom(seed: 4096)
        var ks = [32, 64, 96, 128, 160, 224, 288, 1056, 2080, 4064, 4096]
        for _ in 0..<12 { ks.append(32 * rng.int(1, 128)) }
        for f in QuantFormat.all {
            for k in ks {
                let rows = 9
                var x = randomRows(&rng, count: rows * k)
                if f.type == WEFT_QTYPE_Q8_0 || f.type == WEFT_QTYPE_Q4_0 {
                    for i in 0..<5 { x[rng.int(0, x.count - 1)] = i % 2 == 0 ? 1e3 : -1e3 }  // outliers
                }
                var w = f.quantized(x)
                if f.type == WEFT_QTYPE_Q8_0 {  // -128 cannot come from the quantizer but can from a file
                    for _ in 0..<4 { w[rng.int(0, rows * k / 32 - 1) * 34 + 2 + rng.int(0, 31)] = 0x80 }
                }
                let a = f.quantized(randomRows(&rng, count: 3 * k), activations: true)
                for row in 0..<rows {
                    for arow in 0..<3 {
                        let want = f.dot("scalar", k: k, w, row: row, a, arow: arow)
                        let got = f.dot(path, k: k, w, row: row, a, arow: arow)
                        let tol = 2 * Double(Float.ulpOfOne) * Double(k / 32 + 4)
                            * dotMagnitude(f, k: k, w, row: row, a, arow: arow)
                        XCTAssertEqual(Double(got), Double(want), accuracy: tol,
                                       "\(path) \(f.name) k=\(k) row \(row) act \(arow)")
                    }
                }
            }
        }
    }

    /// One block: the integer sum must be exact in every path (a single scale
    /// multiply, so SIMD and scalar agree to the bit) on extreme values.
    func testSingleBlockIsExactInEveryPath() {
        var rng = TestRandom(seed: 1)
        for f in QuantFormat.all {
            for trial in 0..<200 {
                var w = [UInt8](repeating: 0, count: 2 * f.blockBytes)
                for i in 0..<w.count { w[i] = UInt8(truncatingIfNeeded: rng.next()) }
                // Weight scales: one power of two in [2^-8, 2^8] for both blocks; the
                // activations' amax is 127 so their d is 1. Every product and partial
                // sum is then an integer times that power below 2^24: no rounding anywhere.
                let exponentByte = UInt8(0x3c + rng.int(-8, 8) * 4)  // fp16 exponent field in steps of 1
                for b in 0..<2 {
                    w[b * f.blockBytes] = 0
                    w[b * f.blockBytes + 1] = exponentByte
                    if f.type == WEFT_QTYPE_Q4_1 { w[b * f.blockBytes + 2] = 0; w[b * f.blockBytes + 3] = 0 }
                }
                var x = rng.floats(64, scale: 127)
                if trial % 3 == 0 { for i in 0..<64 { x[i] = i % 2 == 0 ? 127 : -127 } }
                x[0] = 127
                x[32] = -127
                let a = f.quantized(x, activations: true)
                let want = f.dot("scalar", k: 64, w, row: 0, a, arow: 0)
                for path in availablePaths() {
                    let got = f.dot(path, k: 64, w, row: 0, a, arow: 0)
                    // Every partial sum is exact (see above), so the order does not matter.
                    XCTAssertEqual(got.bitPattern, want.bitPattern, "\(path) \(f.name) trial \(trial): \(got) vs \(want)")
                }
            }
        }
    }

    // MARK: against float64

    /// The quantized dot product against float64 Σ deq(w)·x with the float32
    /// activations: the difference is the activations' quantization error,
    /// at most about d/2 per element (plus fp16 rounding of d, and of s for Q4_1).
    func testDotAgainstFloat64() {
        var rng = TestRandom(seed: 64)
        for f in QuantFormat.all {
            for k in [32, 96, 512, 4096] {
                let rows = 6
                let w = f.quantized(randomRows(&rng, count: rows * k))
                let wf = f.dequantized(w, count: rows * k)
                let x = randomRows(&rng, count: k)
                let a = f.quantized(x, activations: true)
                for row in 0..<rows {
                    var exact = 0.0, bound = 0.0, mag = 0.0
                    for b in 0..<(k / 32) {
                        let dy = Double(fp16(a, b * f.activationBlockBytes))
                        let m = f.type == WEFT_QTYPE_Q4_1 ? abs(Double(fp16(w, (row * k / 32 + b) * f.blockBytes + 2))) : 0
                        for j in 0..<32 {
                            let i = b * 32 + j
                            let wv = Double(wf[row * k + i])
                            exact += wv * Double(x[i])
                            mag += abs(wv * Double(x[i]))
                            bound += (abs(wv) + m) * 0.57 * dy
                        }
                        if f.type == WEFT_QTYPE_Q4_1 { bound += m * 32 * 128 * dy * 0x1p-11 }
                    }
                    let tol = bound + 1e-5 * mag + 1e-30
                    for path in ["scalar"] + availablePaths() {
                        let got = Double(f.dot(path, k: k, w, row: row, a, arow: 0))
                        XCTAssertEqual(got, exact, accuracy: tol, "\(path) \(f.name) k=\(k) row \(row)")
                    }
                }
            }
        }
    }

    // MARK: the GEMV driver

    private typealias QGemv = @convention(c) (Int32, Int32, Int32, Int32, UnsafePointer<Float>?, Int,
                                              UnsafeRawPointer?, UnsafeMutablePointer<Float>?, Int,
                                              UnsafeMutableRawPointer?, OpaquePointer?) -> Int32

    private func gemvFunction(_ path: String) -> QGemv {
        switch path {
        case "avx2": return weft_qgemv_avx2
        case "avx512", "avx512vnni": return weft_qgemv_avx512
        default: return weft_qgemv_scalar
        }
    }

    private func runGemv(_ fn: QGemv, _ f: QuantFormat, m: Int, n: Int, k: Int, x: [Float], ldx: Int,
                         w: [UInt8], ldy: Int, pool: OpaquePointer?) -> (Int32, [Float]) {
        var y = [Float](repeating: -7, count: m * ldy)
        var scratch = [UInt8](repeating: 0, count: max(1, weft_qgemv_scratch_bytes(Int32(f.type.rawValue), Int32(m), Int32(k))))
        let rc = scratch.withUnsafeMutableBytes { s in
            w.withUnsafeBytes { wb in
                fn(Int32(f.type.rawValue), Int32(m), Int32(n), Int32(k), x, ldx, wb.baseAddress, &y, ldy, s.baseAddress, pool)
            }
        }
        return (rc, y)
    }

    /// Every path's driver equals its own dot product (bit for bit, with or
    /// without the pool) and the scalar reference (within rounding), for M in
    /// 1...17, odd N, and strides wider than the rows.
    func testGemvAgainstTheDotProducts() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 17)
        for path in ["scalar"] + availablePaths().filter({ $0 != "avx512vnni" }) {
            for f in QuantFormat.all {
                for m in 1...17 {
                    let n = [1, 3, 17, 33, 65, 101][m % 6], k = 32 * rng.int(1, 40)
                    let ldx = k + rng.int(0, 5), ldy = n + rng.int(0, 3)
                    let w = f.quantized(randomRows(&rng, count: n * k))
                    let x = (0..<(m * ldx)).map { _ in rng.float(2) }
                    let (rc, y) = runGemv(gemvFunction(path), f, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: nil)
                    XCTAssertEqual(rc, 0)
                    let (rcPool, yPool) = runGemv(gemvFunction(path), f, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: pool)
                    XCTAssertEqual(rcPool, 0)
                    XCTAssertEqual(bits(yPool), bits(y), "\(path) \(f.name) m=\(m) n=\(n): pool vs one thread")
                    let xs = (0..<m).flatMap { x[($0 * ldx)..<($0 * ldx + k)] }
                    let a = f.quantized(Array(xs), activations: true)
                    for i in 0..<m {
                        for j in 0..<ldy {
                            let got = y[i * ldy + j]
                            if j >= n { XCTAssertEqual(got, -7, "\(path) y past n written"); continue }
                            XCTAssertEqual(got.bitPattern, f.dot(path, k: k, w, row: j, a, arow: i).bitPattern,
                                           "\(path) \(f.name) m=\(m) n=\(n) k=\(k) (\(i), \(j)) vs its dot")
                            let want = f.dot("scalar", k: k, w, row: j, a, arow: i)
                            let tol = 2 * Double(Float.ulpOfOne) * Double(k / 32 + 4)
                                * dotMagnitude(f, k: k, w, row: j, a, arow: i)
                            XCTAssertEqual(Double(got), Double(want), accuracy: tol,
                                           "\(path) \(f.name) m=\(m) n=\(n) k=\(k) (\(i), \(j)) vs scalar")
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 kernels (lane tiles of 8 weight rows x 1, 2, 4 activation rows
    /// for Q4_0/Q4_1; 4 x 2, 2 x 4 for Q8_0, whose m = 1 kernel streams whole
    /// rows 8 blocks at a time) give the scalar reference's bits: exact integer
    /// block sums, then the reference's float32 steps in its order. Ragged n
    /// (partial row tiles, rows split unevenly over the pool), every m up to 9
    /// (partial activation groups), every block count modulo 8 (the row
    /// stream's tail), k past the 256-block chunk of the single dot product,
    /// outliers and Q8_0's -128, with and without the pool.
    func testAVX2IsBitExactWithTheScalarReference() throws {
        try requirePath("avx2")
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 2026)
        for f in QuantFormat.all {
            for (trial, k) in [32, 64, 96, 128, 160, 192, 224, 352, 1056, 8192, 8224, 32 * 269, 32 * 301].enumerated() {
                for m in [1, 2, 3, 4, 5, 7, 8, 9] where k <= 1056 || m <= 3 {
                    let n = [1, 5, 8, 9, 16, 23, 37][(trial + m) % 7]
                    var x = randomRows(&rng, count: n * k)
                    for i in 0..<3 { x[rng.int(0, x.count - 1)] = i % 2 == 0 ? 900 : -900 }
                    var w = f.quantized(x)
                    if f.type == WEFT_QTYPE_Q8_0 {
                        for _ in 0..<4 { w[rng.int(0, n * k / 32 - 1) * 34 + 2 + rng.int(0, 31)] = 0x80 }
                    }
                    var xa = (0..<(m * k)).map { _ in rng.float(2) }
                    xa[rng.int(0, xa.count - 1)] = 300
                    let (rc0, want) = runGemv(weft_qgemv_scalar, f, m: m, n: n, k: k, x: xa, ldx: k, w: w, ldy: n, pool: nil)
                    let (rc1, got) = runGemv(weft_qgemv_avx2, f, m: m, n: n, k: k, x: xa, ldx: k, w: w, ldy: n, pool: nil)
                    let (rc2, gotPool) = runGemv(weft_qgemv_avx2, f, m: m, n: n, k: k, x: xa, ldx: k, w: w, ldy: n, pool: pool)
                    XCTAssertEqual([rc0, rc1, rc2], [0, 0, 0])
                    let wrong = (0..<(m * n)).filter { want[$0].bitPattern != got[$0].bitPattern }
                    XCTAssertEqual(wrong.count, 0, "\(f.name) m=\(m) n=\(n) k=\(k): \(wrong.count) outputs differ from scalar, first \(wrong.first.map { "\(got[$0]) vs \(want[$0])" } ?? "")")
                    XCTAssertEqual(bits(gotPool), bits(got), "\(f.name) m=\(m) n=\(n) k=\(k): pool vs one thread")
                    let a = f.quantized(xa, activations: true)
                    for row in [0, n - 1] {
                        XCTAssertEqual(f.dot("avx2", k: k, w, row: row, a, arow: m - 1).bitPattern,
                                       f.dot("scalar", k: k, w, row: row, a, arow: m - 1).bitPattern,
                                       "\(f.name) k=\(k) single dot, row \(row)")
                    }
                }
            }
        }
    }

    /// The dispatching driver gives the selected path's result.
    func testGemvDispatch() {
        defer { weft_isa_select(weft_isa_detect()) }
        var rng = TestRandom(seed: 3)
        let m = 3, n = 21, k = 320
        for f in QuantFormat.all {
            let w = f.quantized(randomRows(&rng, count: n * k))
            let x = rng.floats(m * k)
            for (isa, path) in [(WEFT_ISA_SCALAR, "scalar"), (WEFT_ISA_AVX2, "avx2"), (WEFT_ISA_AVX512, "avx512")]
            where path == "scalar" || availablePaths().contains(path) {
                weft_isa_select(isa)
                let (rc1, want) = runGemv(gemvFunction(path), f, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                let (rc2, got) = runGemv(weft_qgemv, f, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                XCTAssertEqual(rc1, 0)
                XCTAssertEqual(rc2, 0)
                XCTAssertEqual(bits(got), bits(want), "\(f.name) with \(path) selected")
            }
        }
    }

    func testGemvRejectsBadArguments() {
        let w = [UInt8](repeating: 0, count: 34 * 4), x = [Float](repeating: 1, count: 64)
        // The quantized activations, rounded up to 32 bytes, then the lane tiles'
        // side data: 2 blocks x 2 values x 4 (m rounded up to 4) x 4 bytes.
        XCTAssertEqual(weft_qgemv_scratch_bytes(8, 2, 64), 160 + 2 * 2 * 4 * 4)  // 2 * 2 * 34 = 136
        XCTAssertEqual(weft_qgemv_scratch_bytes(3, 1, 64), 96 + 2 * 2 * 4 * 4)  // 2 * 36 = 72
        for (type, m, n, k) in [(8, 1, 2, 33), (8, 1, 2, 0), (8, 0, 2, 64), (8, 1, -1, 64), (7, 1, 2, 64), (9, 1, 2, 64)] {
            XCTAssertEqual(weft_qgemv_scratch_bytes(Int32(type), Int32(m), Int32(k)) == 0, k % 32 != 0 || k == 0 || m < 1 || type == 7 || type == 9)
            var y = [Float](repeating: -7, count: 4)
            var scratch = [UInt8](repeating: 0, count: 1024)
            let rc = w.withUnsafeBytes { wb in
                scratch.withUnsafeMutableBytes { s in
                    weft_qgemv_scalar(Int32(type), Int32(m), Int32(n), Int32(k), x, 64, wb.baseAddress, &y, 2, s.baseAddress, nil)
                }
            }
            XCTAssertEqual(rc, -1, "type \(type) m \(m) n \(n) k \(k)")
            XCTAssertEqual(y, [-7, -7, -7, -7], "nothing written for type \(type) m \(m) n \(n) k \(k)")
        }
        XCTAssertEqual(weft_qgemv_scalar(8, 1, 1, 64, x, 64, nil, nil, 1, nil, nil), -1)
    }
}
