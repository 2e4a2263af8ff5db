import CKernels
import Foundation
import XCTest

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/quant")

/// One k-quant weight format: block size, where its fp16 scales sit, and its kernels by path.
/// Immutable after construction (holds C-function wrappers), hence @unchecked.
private struct KFormat: @unchecked Sendable {
    typealias Dot = (Int32, UnsafeRawPointer, UnsafeRawPointer) -> Float
    typealias Dequantize = (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int64) -> Void

    let name: String
    let type: Int32
    let blockBytes: Int
    let dOffset: Int
    let dminOffset: Int?  // nil for Q6_K
    let dequantize: Dequantize
    let dots: [String: Dot]

    static let q4_K = KFormat(
        name: "q4_K", type: 12, blockBytes: 144, dOffset: 0, dminOffset: 2,
        dequantize: { weft_dequantize_row_q4_K($0.assumingMemoryBound(to: weft_block_q4_K.self), $1, $2) },
        dots: table([weft_vec_dot_q4_K_q8_K_scalar, weft_vec_dot_q4_K_q8_K_avx2, weft_vec_dot_q4_K_q8_K_avx512,
                     weft_vec_dot_q4_K_q8_K_avx512vnni, weft_vec_dot_q4_K_q8_K]))
    static let q5_K = KFormat(
        name: "q5_K", type: 13, blockBytes: 176, dOffset: 0, dminOffset: 2,
        dequantize: { weft_dequantize_row_q5_K($0.assumingMemoryBound(to: weft_block_q5_K.self), $1, $2) },
        dots: table([weft_vec_dot_q5_K_q8_K_scalar, weft_vec_dot_q5_K_q8_K_avx2, weft_vec_dot_q5_K_q8_K_avx512,
                     weft_vec_dot_q5_K_q8_K_avx512vnni, weft_vec_dot_q5_K_q8_K]))
    static let q6_K = KFormat(
        name: "q6_K", type: 14, blockBytes: 210, dOffset: 208, dminOffset: nil,
        dequantize: { weft_dequantize_row_q6_K($0.assumingMemoryBound(to: weft_block_q6_K.self), $1, $2) },
        dots: table([weft_vec_dot_q6_K_q8_K_scalar, weft_vec_dot_q6_K_q8_K_avx2, weft_vec_dot_q6_K_q8_K_avx512,
                     weft_vec_dot_q6_K_q8_K_avx512vnni, weft_vec_dot_q6_K_q8_K]))
    static let all = [q4_K, q5_K, q6_K]

    private static let names = ["scalar", "avx2", "avx512", "avx512vnni", "dispatch"]
    private typealias D4 = @convention(c) (Int32, UnsafePointer<weft_block_q4_K>?, UnsafePointer<weft_block_q8_K>?) -> Float
    private typealias D5 = @convention(c) (Int32, UnsafePointer<weft_block_q5_K>?, UnsafePointer<weft_block_q8_K>?) -> Float
    private typealias D6 = @convention(c) (Int32, UnsafePointer<weft_block_q6_K>?, UnsafePointer<weft_block_q8_K>?) -> Float
    private static func table(_ fs: [D4]) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(names, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q4_K.self), a.assumingMemoryBound(to: weft_block_q8_K.self)) }
        }))
    }
    private static func table(_ fs: [D5]) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(names, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q5_K.self), a.assumingMemoryBound(to: weft_block_q8_K.self)) }
        }))
    }
    private static func table(_ fs: [D6]) -> [String: Dot] {
        Dictionary(uniqueKeysWithValues: zip(names, fs.map { f -> Dot in
            { n, w, a in f(n, w.assumingMemoryBound(to: weft_block_q6_K.self), a.assumingMemoryBound(to: weft_block_q8_K.self)) }
        }))
    }

    func dequantized(_ q: [UInt8], count: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: count)
        q.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in dequantize(src.baseAddress!, dst.baseAddress!, Int64(count)) }
        }
        return out
    }

    /// Random valid blocks: random bytes with finite fp16 scales of random magnitude.
    func randomBlocks(_ rng: inout TestRandom, count: Int) -> [UInt8] {
        var b = (0..<(count * blockBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for i in 0..<count {
            let mag = Float(pow(10, Double(rng.int(-40, 5)) / 10))
            put16(&b, i * blockBytes + dOffset, weft_fp32_to_fp16(rng.float(mag)))
            if let o = dminOffset { put16(&b, i * blockBytes + o, weft_fp32_to_fp16(rng.float(mag))) }
        }
        return b
    }

    /// The same blocks with d (keep: .mins) or dmin (keep: .scales) set to zero, so that
    /// dequantizing gives the two parts d·sc·q and -dmin·m of each weight separately.
    func part(_ b: [UInt8], keep: KPart) -> [UInt8] {
        guard let o = dminOffset else { return b }
        var c = b
        for i in 0..<(b.count / blockBytes) { put16(&c, i * blockBytes + (keep == .scales ? o : dOffset), 0) }
        return c
    }

    func dot(_ path: String, k: Int, _ w: [UInt8], row: Int, _ a: [UInt8], arow: Int) -> Float {
        let f = dots[path]!
        return w.withUnsafeBytes { wb in
            a.withUnsafeBytes { ab in
                f(Int32(k), wb.baseAddress! + row * (k / 256) * blockBytes, ab.baseAddress! + arow * (k / 256) * 292)
            }
        }
    }
}

private enum KPart { case scales, mins }

private func put16(_ b: inout [UInt8], _ o: Int, _ v: UInt16) {
    b[o] = UInt8(v & 0xff)
    b[o + 1] = UInt8(v >> 8)
}

private typealias Q8KQuantizer = @convention(c) (UnsafePointer<Float>?, UnsafeMutablePointer<weft_block_q8_K>?, Int64) -> Void

private func q8K(_ x: [Float], _ f: Q8KQuantizer = weft_quantize_row_q8_K) -> [UInt8] {
    var out = [UInt8](repeating: 0xAA, count: x.count / 256 * 292)
    out.withUnsafeMutableBytes { o in
        f(x, o.baseAddress!.assumingMemoryBound(to: weft_block_q8_K.self), Int64(x.count))
    }
    return out
}

private func q8KDequantized(_ q: [UInt8], count: Int) -> [Float] {
    var out = [Float](repeating: .nan, count: count)
    q.withUnsafeBytes { src in
        weft_dequantize_row_q8_K(src.baseAddress!.assumingMemoryBound(to: weft_block_q8_K.self), &out, Int64(count))
    }
    return out
}

/// The SIMD paths this CPU can run.
private func kPaths() -> [String] {
    var paths: [String] = []
    if weft_quant_has_avx2() != 0 { paths.append("avx2") }
    if weft_isa_detect().rawValue >= WEFT_ISA_AVX512.rawValue { paths.append("avx512") }
    if weft_quant_has_avx512vnni() != 0 { paths.append("avx512vnni") }
    return paths
}

private func requireKPath(_ path: String) throws {
    if !kPaths().contains(path) {
        throw XCTSkip("the \(path) k-quant kernels need a CPU with \(path); this one has \(String(cString: weft_isa_name(weft_isa_detect())))")
    }
}

private func kRandomRows(_ rng: inout TestRandom, count: Int) -> [Float] {
    var x: [Float] = []
    while x.count < count {
        let scale = Float(pow(10, Double(rng.int(-30, 20)) / 10))
        for _ in 0..<32 { x.append(rng.float(scale)) }
    }
    return x
}

final class QuantKTests: XCTestCase {
    private struct Manifest: Decodable {
        struct Weights: Decodable { let name: String; let blocks: Int; let note: String }
        struct Activations: Decodable { let name: String; let count: Int; let note: String }
        let weights: [Weights]
        let activations: [Activations]
    }

    private func fixture(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: fixtures.appendingPathComponent(name)))
    }

    private func floats(_ bytes: [UInt8]) -> [Float] {
        stride(from: 0, to: bytes.count - 3, by: 4).map { i in
            Float(bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
        }
    }

    private func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(fixture("kquant.json")))
    }

    // MARK: bit-exactness against the gguf package

    /// The gguf package's dequantization of random and extreme blocks, bit for bit, through
    /// the format's dequantizer and through weft_dequantize_row.
    func testDequantizeMatchesTheGGUFPackage() throws {
        let m = try manifest()
        XCTAssertEqual(m.weights.count, 2)
        for c in m.weights {
            for f in KFormat.all {
                let blocks = try fixture("kq_\(c.name).\(f.name)")
                let want = floats(try fixture("kq_\(c.name).\(f.name).deq"))
                XCTAssertEqual(blocks.count, c.blocks * f.blockBytes, "\(c.name).\(f.name) size")
                XCTAssertEqual(want.count, c.blocks * 256)
                XCTAssertEqual(bits(f.dequantized(blocks, count: want.count)), bits(want), "\(c.name) \(f.name) (\(c.note))")
                var viaTable = [Float](repeating: .nan, count: want.count)
                let rc = blocks.withUnsafeBytes { weft_dequantize_row(f.type, $0.baseAddress, &viaTable, Int64(want.count)) }
                XCTAssertEqual(rc, 0)
                XCTAssertEqual(bits(viaTable), bits(want), "\(c.name) \(f.name) through weft_dequantize_row")
                XCTAssertEqual(weft_wtype_supported(f.type), 1)
                XCTAssertEqual(weft_wtype_row_bytes(f.type, 512), 2 * f.blockBytes)
                XCTAssertEqual(weft_qtype_block_bytes(f.type), f.blockBytes)
                XCTAssertEqual(blocks.withUnsafeBytes { weft_dequantize_row(f.type, $0.baseAddress, &viaTable, 300) }, -1,
                               "\(f.name): k not a multiple of 256")
            }
        }
        XCTAssertEqual(weft_qtype_block_bytes(15), 292)
    }

    /// Q8_K against the numpy transcription of ggml's quantize_row_q8_K_ref (ties of
    /// magnitude, .5 ties, zeros, extremes), on every path.
    func testQ8KQuantizerMatchesTheReference() throws {
        let m = try manifest()
        XCTAssertGreaterThanOrEqual(m.activations.count, 6)
        var quantizers: [(String, Q8KQuantizer)] = [("scalar", weft_quantize_row_q8_K_scalar), ("dispatch", weft_quantize_row_q8_K)]
        if kPaths().contains("avx2") { quantizers.append(("avx2", weft_quantize_row_q8_K_avx2)) }
        if kPaths().contains("avx512") { quantizers.append(("avx512", weft_quantize_row_q8_K_avx512)) }
        for c in m.activations {
            let x = floats(try fixture("q8k_\(c.name).f32"))
            let want = try fixture("q8k_\(c.name).q8_K")
            XCTAssertEqual(x.count, c.count)
            for (path, f) in quantizers {
                let got = q8K(x, f)
                if got != want {
                    let first = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
                    XCTFail("\(path) q8_K \(c.name): bytes differ from the reference at byte \(first) (\(c.note))")
                }
            }
        }
    }

    /// The SIMD quantizers write the reference's bytes on random rows, including NaN,
    /// infinities, signed zeros and subnormals; and the reference's properties hold.
    func testQ8KQuantizerPathsAgree() {
        var rng = TestRandom(seed: 88)
        var specials: [Float] = [.nan, -.nan, .infinity, -.infinity, -0.0, 0x1p-140, -0x1p-149, 1e30]
        specials.append(Float(bitPattern: 0x7f80_0001))  // a signalling NaN with a payload
        for trial in 0..<200 {
            var x = kRandomRows(&rng, count: 256 * rng.int(1, 4))
            if trial % 4 == 1 { for _ in 0..<3 { x[rng.int(0, x.count - 1)] = specials[rng.int(0, specials.count - 1)] } }
            if trial % 4 == 2 { for i in 0..<256 { x[i] = 0 } }
            let want = q8K(x, weft_quantize_row_q8_K_scalar)
            for (path, f) in [("avx2", weft_quantize_row_q8_K_avx2), ("avx512", weft_quantize_row_q8_K_avx512)] as [(String, Q8KQuantizer)]
            where kPaths().contains(path) {
                XCTAssertEqual(q8K(x, f), want, "\(path) trial \(trial)")
            }
            if trial % 4 == 1 { continue }
            for b in 0..<(x.count / 256) {
                let o = b * 292
                let d = Float(bitPattern: UInt32(want[o]) | UInt32(want[o + 1]) << 8 | UInt32(want[o + 2]) << 16 | UInt32(want[o + 3]) << 24)
                let q = (0..<256).map { Int(Int8(bitPattern: want[o + 4 + $0])) }
                let block = x[(b * 256)..<(b * 256 + 256)]
                let amax = block.map { abs($0) }.max() ?? 0
                if amax == 0 {
                    XCTAssertEqual(d, 0)
                    XCTAssertEqual(want[(o + 4)..<(o + 292)].allSatisfy { $0 == 0 }, true, "zero block \(b)")
                    continue
                }
                XCTAssertEqual(Double(abs(d)), Double(amax) / 127, accuracy: Double(amax) / 127 * 1e-6, "trial \(trial) block \(b) d")
                XCTAssertTrue(q.allSatisfy { abs($0) <= 127 })
                for (j, v) in block.enumerated() {
                    XCTAssertEqual(Double(q[j]) * Double(d), Double(v), accuracy: Double(abs(d)) * 0.5001, "trial \(trial) element \(j)")
                }
                for g in 0..<16 {
                    let s = Int(Int16(bitPattern: UInt16(want[o + 260 + 2 * g]) | UInt16(want[o + 261 + 2 * g]) << 8))
                    XCTAssertEqual(s, q[(16 * g)..<(16 * g + 16)].reduce(0, +), "trial \(trial) block \(b) bsum \(g)")
                }
            }
        }
    }

    /// The AVX2 Q8_0 / Q8_1 activation quantizers write the references' bytes: on the gguf
    /// package's Q8_0 fixtures (.5 ties, zeros, fp16 overflow) and on random rows.
    func testSIMD8BitQuantizersMatchTheReferences() throws {
        try requireKPath("avx2")
        let names = ["random_normal", "random_uniform_wide", "zeros", "one_huge", "negative_max", "round_half", "tiny", "constant"]
        var rows: [[Float]] = try names.map { floats(try fixture("\($0).f32")) }
        var rng = TestRandom(seed: 808)
        for _ in 0..<300 {
            var x = kRandomRows(&rng, count: 32 * rng.int(1, 9))
            if rng.int(0, 3) == 0 { for i in 0..<x.count { x[i] = Float(rng.int(-254, 254)) / 2 } }  // .5 ties
            if rng.int(0, 5) == 0 { x[rng.int(0, x.count - 1)] = -0.0 }
            rows.append(x)
        }
        for (n, x) in rows.enumerated() {
            let nb = x.count / 32
            var r0 = [weft_block_q8_0](repeating: weft_block_q8_0(), count: nb), s0 = r0
            var r1 = [weft_block_q8_1](repeating: weft_block_q8_1(), count: nb), s1 = r1
            weft_quantize_row_q8_0(x, &r0, Int64(x.count))
            weft_quantize_row_q8_0_avx2(x, &s0, Int64(x.count))
            weft_quantize_row_q8_1(x, &r1, Int64(x.count))
            weft_quantize_row_q8_1_avx2(x, &s1, Int64(x.count))
            let b0 = r0.withUnsafeBytes { [UInt8]($0) }, c0 = s0.withUnsafeBytes { [UInt8]($0) }
            let b1 = r1.withUnsafeBytes { [UInt8]($0) }, c1 = s1.withUnsafeBytes { [UInt8]($0) }
            XCTAssertEqual(c0, b0, "q8_0 row \(n)")
            XCTAssertEqual(c1, b1, "q8_1 row \(n)")
            if n < names.count { XCTAssertEqual(c0, try fixture("\(names[n]).q8_0"), "q8_0 \(names[n]) vs the gguf package") }
        }
    }

    // MARK: dot products

    func testAVX2() throws { try requireKPath("avx2"); checkDots("avx2") }
    func testAVX512() throws { try requireKPath("avx512"); checkDots("avx512") }
    func testAVX512VNNI() throws { try requireKPath("avx512vnni"); checkDots("avx512vnni") }
    func testScalarAndDispatch() { checkDots("scalar"); checkDots("dispatch") }

    /// Every path against float64 Σ deq(w)·deq(a) over the dequantized weights and Q8_K
    /// activations, on ragged lengths and 1..7 rows; the tolerance is relative to the
    /// magnitude of the two parts the kernel sums (Σ|d·sc·q·a| + Σ|dmin·m·a|). The
    /// paths must also give the scalar reference's bits (their float32 steps are the same).
    private func checkDots(_ path: String) {
        var rng = TestRandom(seed: 256)
        for f in KFormat.all {
            for (shape, k) in [256, 512, 768, 1280, 2304, 4096, 256 * 23].enumerated() {
                let rows = 1 + shape % 7, acts = 1 + (shape * 3) % 7
                var w = f.randomBlocks(&rng, count: rows * k / 256)
                if shape == 2 {  // the fixture's extreme blocks at the start
                    let edge = (try? fixture("kq_edge.\(f.name)")) ?? []
                    XCTAssertFalse(edge.isEmpty)
                    for i in 0..<min(edge.count, w.count) { w[i] = edge[i] }
                }
                let wf = f.dequantized(w, count: rows * k)
                let ws = f.dequantized(f.part(w, keep: .scales), count: rows * k)
                let wm = f.dequantized(f.part(w, keep: .mins), count: rows * k)
                let a = q8K(kRandomRows(&rng, count: acts * k))
                let af = q8KDequantized(a, count: acts * k)
                for r in 0..<rows {
                    for c in 0..<acts {
                        var exact = 0.0, mag = 0.0
                        for i in 0..<k {
                            let x = Double(af[c * k + i])
                            exact += Double(wf[r * k + i]) * x
                            mag += f.dminOffset == nil ? abs(Double(wf[r * k + i]) * x)
                                : abs(Double(ws[r * k + i]) * x) + abs(Double(wm[r * k + i]) * x)
                        }
                        let got = f.dot(path, k: k, w, row: r, a, arow: c)
                        let tol = 4 * Double(Float.ulpOfOne) * Double(k / 256 + 4) * mag + 1e-37
                        XCTAssertEqual(Double(got), exact, accuracy: tol, "\(path) \(f.name) k=\(k) row \(r) act \(c)")
                        let ref = f.dot("scalar", k: k, w, row: r, a, arow: c)
                        XCTAssertEqual(got.bitPattern, ref.bitPattern, "\(path) \(f.name) k=\(k) row \(r) act \(c): \(got) vs scalar \(ref)")
                    }
                }
            }
        }
    }

    // MARK: the drivers

    private typealias QGemv = @convention(c) (Int32, Int32, Int32, Int32, UnsafePointer<Float>?, Int,
                                              UnsafeRawPointer?, UnsafeMutablePointer<Float>?, Int,
                                              UnsafeMutableRawPointer?, OpaquePointer?) -> Int32

    private func gemv(_ fn: QGemv, _ f: KFormat, m: Int, n: Int, k: Int, x: [Float], ldx: Int, w: [UInt8], ldy: Int,
                      pool: OpaquePointer?) -> (Int32, [Float]) {
        var y = [Float](repeating: -7, count: m * ldy)
        var scratch = [UInt8](repeating: 0, count: max(1, weft_qgemv_scratch_bytes(f.type, Int32(m), Int32(k))))
        let rc = scratch.withUnsafeMutableBytes { s in
            w.withUnsafeBytes { fn(f.type, Int32(m), Int32(n), Int32(k), x, ldx, $0.baseAddress, &y, ldy, s.baseAddress, pool) }
        }
        return (rc, y)
    }

    /// weft_qgemv for the k-quants at m = 1, 3, 16 (and 2, 5, 7 for the tile tails) on every
    /// path, alone and on a pool of 2 threads: the scalar path's bits (every tile shape gives
    /// the single dot's result), nothing written past n.
    func testGemvAgainstTheScalarPath() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 1616)
        for f in KFormat.all {
            for m in [1, 3, 16, 2, 5, 7] {
                let n = [1, 5, 17, 33, 4, 9][m % 6], k = 256 * rng.int(1, 6)
                let ldx = k + rng.int(0, 3), ldy = n + rng.int(0, 2)
                let w = f.randomBlocks(&rng, count: n * k / 256)
                let x = (0..<(m * ldx)).map { _ in rng.float(3) }
                let (rc0, want) = gemv(weft_qgemv_scalar, f, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: nil)
                XCTAssertEqual(rc0, 0)
                let xs = (0..<m).flatMap { x[($0 * ldx)..<($0 * ldx + k)] }
                let a = q8K(Array(xs))
                for i in 0..<m {
                    for j in 0..<n {
                        XCTAssertEqual(want[i * ldy + j].bitPattern, f.dot("scalar", k: k, w, row: j, a, arow: i).bitPattern,
                                       "scalar gemv \(f.name) m=\(m) (\(i), \(j)) vs its dot")
                    }
                    for j in n..<ldy { XCTAssertEqual(want[i * ldy + j], -7, "y past n written") }
                }
                for path in ["avx2", "avx512"] where kPaths().contains(path) {
                    let fn: QGemv = path == "avx2" ? weft_qgemv_avx2 : weft_qgemv_avx512
                    for p in [nil, pool] {
                        let (rc, got) = gemv(fn, f, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: p)
                        XCTAssertEqual(rc, 0)
                        XCTAssertEqual(bits(got), bits(want), "\(path) \(f.name) m=\(m) n=\(n) k=\(k) pool=\(p != nil)")
                    }
                }
                let (rcd, gotd) = gemv(weft_qgemv, f, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: pool)
                XCTAssertEqual(rcd, 0)
                XCTAssertEqual(bits(gotd), bits(want), "dispatching \(f.name) m=\(m)")
            }
        }
    }

    /// The SIMD tiles (4 weight rows x 1 activation row at m = 1, with the next tile
    /// prefetched; 1 weight row x 2-4 activation rows at m > 1; the scales of two rows
    /// unpacked at once) on every tile count and tail: n = 1...13 and a few larger, m = 1...5,
    /// k up to 17 super-blocks, alone and split over 2 threads (ragged halves), weights
    /// exactly n rows long, a quarter of the blocks with scale bytes from the unpacking's edge
    /// patterns (all bits set, only the 2 high bits, only the low 6, single nibbles): the
    /// scalar path's bits, and nothing written past n.
    func testGemvTilesOnRaggedShapes() throws {
        let paths = ["avx2", "avx512"].filter { kPaths().contains($0) }
        if paths.isEmpty { throw XCTSkip("no SIMD k-quant path on this CPU") }
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 4242)
        let edges: [UInt8] = [0xFF, 0xC0, 0x3F, 0x0F, 0xF0, 0x00, 0x40, 0x80]
        for f in KFormat.all {
            let scalesAt = f.dminOffset == nil ? 192 : 4, scaleBytes = f.dminOffset == nil ? 16 : 12
            for n in Array(1...13) + [16, 17, 30, 63] {
                let m = 1 + (n * 7 + Int(f.type)) % 5, k = 256 * [1, 3, 17, 2][n % 4]
                var w = f.randomBlocks(&rng, count: n * k / 256)
                for b in 0..<(n * k / 256) where rng.int(0, 3) == 0 {
                    for t in 0..<scaleBytes { w[b * f.blockBytes + scalesAt + t] = edges[rng.int(0, edges.count - 1)] }
                }
                let x = (0..<(m * k)).map { _ in rng.float(2) }
                let ldy = n + 1
                let (rc0, want) = gemv(weft_qgemv_scalar, f, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: ldy, pool: nil)
                XCTAssertEqual(rc0, 0)
                for path in paths {
                    let fn: QGemv = path == "avx2" ? weft_qgemv_avx2 : weft_qgemv_avx512
                    for p in [nil, pool] {
                        let (rc, got) = gemv(fn, f, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: ldy, pool: p)
                        XCTAssertEqual(rc, 0)
                        XCTAssertEqual(bits(got), bits(want), "\(path) \(f.name) m=\(m) n=\(n) k=\(k) pool=\(p != nil)")
                        for i in 0..<m { XCTAssertEqual(got[i * ldy + n], -7, "\(path) \(f.name) m=\(m) n=\(n): y past n written") }
                    }
                }
            }
        }
    }

    /// weft_wgemm on k-quant weights at m = 1, 3 and 16 with a pool of 2: within the
    /// activations' Q8_K rounding of float64 over the dequantized weights (either path), and
    /// the scalar GEMV's bits at m = 1 and 3 (the integer-dot path).
    func testWGemmOnKQuants() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 99)
        for f in KFormat.all {
            for m in [1, 3, 16] {
                let n = 37, k = 512
                let w = f.randomBlocks(&rng, count: n * k / 256)
                let x = (0..<(m * k)).map { _ in rng.float(2) }
                let need = weft_wgemm_scratch_bytes(f.type, Int32(m), Int32(n), Int32(k), 2)
                XCTAssertGreaterThan(need, 0, "\(f.name) m=\(m) scratch")
                var scratch = [UInt8](repeating: 0, count: need)
                var y = [Float](repeating: -7, count: m * n)
                let rc = scratch.withUnsafeMutableBytes { s in
                    w.withUnsafeBytes { weft_wgemm(f.type, Int32(m), Int32(n), Int32(k), x, k, $0.baseAddress, &y, n, s.baseAddress, need, pool) }
                }
                XCTAssertEqual(rc, 0, "\(f.name) m=\(m)")
                let (_, want) = gemv(weft_qgemv_scalar, f, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                let wf = f.dequantized(w, count: n * k)
                for i in 0..<m {
                    for j in 0..<n {
                        var exact = 0.0, mag = 0.0, qerr = 0.0
                        let xs = x[(i * k)..<(i * k + k)]
                        for (t, xv) in xs.enumerated() {
                            exact += Double(wf[j * k + t]) * Double(xv)
                            mag += abs(Double(wf[j * k + t]) * Double(xv))
                        }
                        // Q8_K rounds each activation by at most d/2 = amax/254 per block.
                        for b in 0..<(k / 256) {
                            let amax = xs[(xs.startIndex + b * 256)..<(xs.startIndex + b * 256 + 256)].map { abs(Double($0)) }.max() ?? 0
                            for t in 0..<256 { qerr += abs(Double(wf[j * k + b * 256 + t])) * amax / 254 * 1.001 }
                        }
                        let got = Double(y[i * n + j])
                        XCTAssertEqual(got, exact, accuracy: qerr + 1e-5 * mag + 1e-30, "wgemm \(f.name) m=\(m) (\(i), \(j))")
                        if m < 16 {
                            // weft_wgemm takes the integer-dot path below 16 rows: the scalar GEMV's bits
                            // (every path's float steps are the same).
                            XCTAssertEqual(Float(got).bitPattern, want[i * n + j].bitPattern, "wgemm \(f.name) m=\(m) (\(i), \(j)) vs scalar gemv")
                        }
                    }
                }
            }
        }
    }

    func testGemvRejectsBadKQuantArguments() {
        for type: Int32 in [12, 13, 14] {
            XCTAssertEqual(weft_qgemv_scratch_bytes(type, 2, 512), 2 * 2 * 292)
            XCTAssertEqual(weft_qgemv_scratch_bytes(type, 1, 288), 0, "k = 288 is not a multiple of 256")
            XCTAssertEqual(weft_qgemv_scratch_bytes(type, 1, 0), 0)
            XCTAssertEqual(weft_qgemv_scratch_bytes(type, 0, 256), 0)
            let w = [UInt8](repeating: 0, count: 1024), x = [Float](repeating: 1, count: 512)
            var y = [Float](repeating: -7, count: 4)
            var scratch = [UInt8](repeating: 0, count: 4096)
            for (m, n, k) in [(1, 2, 288), (1, 2, 128), (0, 2, 256), (1, -1, 256)] {
                let rc = w.withUnsafeBytes { wb in
                    scratch.withUnsafeMutableBytes { weft_qgemv(type, Int32(m), Int32(n), Int32(k), x, 512, wb.baseAddress, &y, 2, $0.baseAddress, nil) }
                }
                XCTAssertEqual(rc, -1, "type \(type) m \(m) n \(n) k \(k)")
                XCTAssertEqual(y, [-7, -7, -7, -7])
            }
        }
        XCTAssertEqual(weft_qgemv_scratch_bytes(15, 1, 256), 0, "Q8_K is not a weight format here")
    }
}
