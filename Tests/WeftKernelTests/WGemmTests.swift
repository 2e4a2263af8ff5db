import CKernels
import XCTest

/// weft_wgemm (linear layers over weights in their stored format): every
/// supported format on both paths, every ISA this CPU has, one and two pool
/// threads, against a float64 product of the dequantized weights; the scratch
/// contract, bad arguments, and the row conversions.
final class WGemmTests: XCTestCase {
    static let allTypes: [Int32] = [1, 30, 8, 2, 3, 12, 13, 14]  // F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q5_K Q6_K
    static let dot = Int32(WEFT_WGEMM_DOT.rawValue), panel = Int32(WEFT_WGEMM_PANEL.rawValue)
    static let int = Int32(WEFT_WGEMM_INT.rawValue)
    static let auto = Int32(WEFT_WGEMM_AUTO.rawValue)

    static var supportedTypes: [Int32] { allTypes.filter { weft_wtype_supported($0) != 0 } }

    static func name(_ type: Int32) -> String {
        [1: "F16", 30: "BF16", 8: "Q8_0", 2: "Q4_0", 3: "Q4_1", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K"][type] ?? "type \(type)"
    }

    static func is16(_ type: Int32) -> Bool { type == 1 || type == 30 }

    /// The ISAs this CPU runs (AVX-512 only where present).
    static var isas: [weft_isa] {
        [WEFT_ISA_SCALAR, WEFT_ISA_AVX2, WEFT_ISA_AVX512].filter { $0.rawValue <= weft_isa_detect().rawValue }
    }

    /// n rows of k elements in `type`: quantized from random floats (a few
    /// outliers) where a quantizer exists, else random blocks whose fp16 scale
    /// fields are set to small finite values (the k-quants).
    static func weights(_ type: Int32, n: Int, k: Int, _ rng: inout TestRandom) -> [UInt8] {
        let rowBytes = weft_wtype_row_bytes(type, Int64(k))
        var w = [UInt8](repeating: 0, count: rowBytes * n)
        var floats = rng.floats(k, scale: 1)
        var quantized = true
        w.withUnsafeMutableBytes { wb in
            for j in 0..<n {
                for i in 0..<k { floats[i] = rng.float(1) * (rng.int(0, 50) == 0 ? 8 : 1) }
                if weft_quantize_row(type, floats, wb.baseAddress! + j * rowBytes, Int64(k)) != 0 { quantized = false; break }
            }
        }
        if quantized { return w }
        for i in w.indices { w[i] = UInt8(truncatingIfNeeded: rng.next()) }
        let blockBytes = Int(weft_wtype_block_bytes(type))
        let scaleOffsets: [Int] = type == 14 ? [208] : [0, 2]  // Q6_K: d last; Q4_K/Q5_K: d, dmin first
        for b in 0..<(w.count / blockBytes) {
            for o in scaleOffsets {
                let h = weft_fp32_to_fp16(Float(rng.int(1, 100)) * 1e-3)
                w[b * blockBytes + o] = UInt8(h & 0xff)
                w[b * blockBytes + o + 1] = UInt8(h >> 8)
            }
        }
        return w
    }

    static func dequantized(_ type: Int32, _ w: [UInt8], n: Int, k: Int) -> [Float] {
        let rowBytes = weft_wtype_row_bytes(type, Int64(k))
        var out = [Float](repeating: 0, count: n * k)
        w.withUnsafeBytes { wb in
            out.withUnsafeMutableBufferPointer { o in
                for j in 0..<n {
                    XCTAssertEqual(weft_dequantize_row(type, wb.baseAddress! + j * rowBytes, o.baseAddress! + j * k, Int64(k)), 0)
                }
            }
        }
        return out
    }

    /// Runs one path; y starts at -7 everywhere and the scratch has a guard
    /// tail that must stay untouched.
    static func run(_ path: Int32, _ type: Int32, m: Int, n: Int, k: Int, x: [Float], ldx: Int, w: [UInt8],
                    ldy: Int, pool: OpaquePointer?, file: StaticString = #filePath, line: UInt = #line) -> (Int32, [Float]) {
        let threads = pool.map { Int(weft_pool_size($0)) } ?? 1
        let need = path == auto ? weft_wgemm_scratch_bytes(type, Int32(m), Int32(n), Int32(k), Int32(threads))
            : weft_wgemm_path_scratch_bytes(path, type, Int32(m), Int32(n), Int32(k), Int32(threads))
        XCTAssertGreaterThan(need, 0, "\(name(type)) path \(path) scratch", file: file, line: line)
        var scratch = [UInt8](repeating: 0xA5, count: need + 256)
        var y = [Float](repeating: -7, count: m * ldy)
        let rc = scratch.withUnsafeMutableBytes { s in
            w.withUnsafeBytes { wb in
                weft_wgemm_path(path, type, Int32(m), Int32(n), Int32(k), x, ldx, wb.baseAddress, &y, ldy,
                                s.baseAddress, need, pool)
            }
        }
        XCTAssertTrue(scratch[need...].allSatisfy { $0 == 0xA5 }, "\(name(type)) path \(path): wrote past its scratch", file: file, line: line)
        return (rc, y)
    }

    /// The float64 product of x (m rows, stride ldx) and the dequantized
    /// weights, with two |error| bounds for a float32 result: rounding of each
    /// product and running sum (k steps), and that plus, for block formats on
    /// the dot path, the 8-bit quantization of each 32-element activation block
    /// (at most 0.6 of its scale per element: half a step plus the fp16
    /// rounding of the scale).
    static func reference(_ x: [Float], ldx: Int, m: Int, _ wf: [Float], n: Int, k: Int)
        -> (want: [Double], rounding: [Double], quantized: [Double]) {
        var want = [Double](repeating: 0, count: m * n), rounding = want, quantized = want
        x.withUnsafeBufferPointer { xb in
            wf.withUnsafeBufferPointer { wb in
                for i in 0..<m {
                    for j in 0..<n {
                        var sum = 0.0, magnitude = 0.0, quantization = 0.0
                        var b = 0
                        while b < k {
                            let e = min(k, b + 32)
                            var amax = 0.0, wsum = 0.0
                            for t in b..<e {
                                let xv = Double(xb[i * ldx + t]), wv = Double(wb[j * k + t])
                                sum += xv * wv
                                magnitude += abs(xv * wv)
                                amax = max(amax, abs(xv))
                                wsum += abs(wv)
                            }
                            quantization += 0.6 * amax / 127 * wsum
                            b = e
                        }
                        want[i * n + j] = sum
                        rounding[i * n + j] = Double(k + 16) * Double(Float.ulpOfOne) * magnitude + 1e-30
                        quantized[i * n + j] = rounding[i * n + j] + quantization
                    }
                }
            }
        }
        return (want, rounding, quantized)
    }

    /// Every format, path, ISA and thread count against float64 on ragged
    /// shapes: m in 1...9, 17, 70; n not a multiple of the 32-row panel nor of
    /// the 4-row tile (and beyond one 256-row block); k a multiple of the
    /// block, beyond one 256-column chunk (and, for 16-bit weights, odd).
    func testAgainstFloat64Reference() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool); weft_isa_select(weft_isa_detect()) }
        var rng = TestRandom(seed: 2026)
        let ms = Array(1...9) + [17, 70]
        let ns = [1, 37, 70, 301]
        for type in Self.supportedTypes where type != 0 {
            let block = Int(weft_wtype_block_elements(type))
            let ks = block == 1 ? [13, 96, 1037] : block == 32 ? [32, 96, 544] : [256, 768]
            var cases = 0
            // Each m with a rotating n and k, then one case with several row
            // blocks per thread and several K chunks at once.
            // Then the panel path's packed-x rounds: many row groups of
            // unequal size, and m past WGEMM_MB = 512 (a second, short round).
            let shapes = ms.enumerated().map { (m: $0.element, n: ns[$0.offset % ns.count], k: ks[$0.offset % ks.count]) }
                + [(m: 3, n: 530, k: ks.last!), (m: 97, n: 70, k: ks.last!), (m: 520, n: 37, k: ks[1])]
            for (index, (m, n, k)) in shapes.enumerated() {
                let ldx = k + index % 3, ldy = n + 1 + index % 2
                let w = Self.weights(type, n: n, k: k, &rng)
                let wf = Self.dequantized(type, w, n: n, k: k)
                let x = (0..<(m * ldx)).map { _ in rng.float(2) }
                let ref = Self.reference(x, ldx: ldx, m: m, wf, n: n, k: k)
                for isa in Self.isas {
                    weft_isa_select(isa)
                    for path in [Self.dot, Self.panel, Self.int, Self.auto] {
                        if path == Self.dot || path == Self.int, weft_wgemm_path_scratch_bytes(path, type, Int32(m), Int32(n), Int32(k), 1) == 0 { continue }
                        for p in [nil, pool] {
                            let (rc, y) = Self.run(path, type, m: m, n: n, k: k, x: x, ldx: ldx, w: w, ldy: ldy, pool: p)
                            let label = "\(Self.name(type)) \(String(cString: weft_isa_name(isa))) path \(path) threads \(p == nil ? 1 : 2) m=\(m) n=\(n) k=\(k)"
                            XCTAssertEqual(rc, 0, label)
                            let chosen = path == Self.auto ? weft_wgemm_choose(type, Int32(m), Int32(n), Int32(k), p == nil ? 1 : 2) : path
                            let tolerance = (chosen == Self.dot || chosen == Self.int) && !Self.is16(type) ? ref.quantized : ref.rounding
                            var failures = 0
                            for i in 0..<m {
                                for j in 0..<ldy {
                                    let got = y[i * ldy + j]
                                    if j >= n {
                                        if got != -7 && failures < 5 { failures += 1; XCTFail("\(label): y[\(i)][\(j)] past n written") }
                                        continue
                                    }
                                    let want = ref.want[i * n + j], tol = tolerance[i * n + j]
                                    if !(abs(Double(got) - want) <= tol) && failures < 5 {
                                        failures += 1
                                        XCTFail("\(label): y[\(i)][\(j)] = \(got), float64 \(want), bound \(tol)")
                                    }
                                }
                            }
                            cases += 1
                        }
                    }
                }
            }
            XCTAssertGreaterThan(cases, 0)
        }
    }

    /// Two threads give the same bits as one on each path (the row split only
    /// changes which thread computes a row, not how).
    func testPoolMatchesOneThread() throws {
        let pool = try XCTUnwrap(weft_pool_create(2, nil, 1000))
        defer { weft_pool_destroy(pool) }
        var rng = TestRandom(seed: 9)
        for type in Self.supportedTypes where type != 0 {
            let k = Int(weft_wtype_block_elements(type)) == 256 ? 512 : 320, n = 75
            let w = Self.weights(type, n: n, k: k, &rng)
            for m in [1, 5, 40, 97, 517] {
                let x = rng.floats(m * k)
                for path in [Self.dot, Self.panel, Self.int] {
                    if weft_wgemm_path_scratch_bytes(path, type, Int32(m), Int32(n), Int32(k), 1) == 0 { continue }
                    let (rc1, y1) = Self.run(path, type, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                    let (rc2, y2) = Self.run(path, type, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: pool)
                    XCTAssertEqual(rc1, 0)
                    XCTAssertEqual(rc2, 0)
                    XCTAssertEqual(bits(y1), bits(y2), "\(Self.name(type)) path \(path) m=\(m)")
                }
            }
        }
    }

    /// The SIMD 16-bit decode kernels against the scalar reference: the same
    /// widened weights, so only the summation order differs.
    func testSixteenBitDecodeMatchesScalar() throws {
        defer { weft_isa_select(weft_isa_detect()) }
        var rng = TestRandom(seed: 5)
        for type: Int32 in [1, 30] {
            for (m, k) in [(1, 8), (1, 4099), (2, 31), (3, 2048), (4, 100), (9, 1030), (16, 2049)] {
                let n = 7
                let w = Self.weights(type, n: n, k: k, &rng)
                let x = rng.floats(m * k, scale: 3)
                weft_isa_select(WEFT_ISA_SCALAR)
                let (rc0, want) = Self.run(Self.dot, type, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                XCTAssertEqual(rc0, 0)
                let wf = Self.dequantized(type, w, n: n, k: k)
                for isa in Self.isas where isa != WEFT_ISA_SCALAR {
                    weft_isa_select(isa)
                    let (rc, got) = Self.run(Self.dot, type, m: m, n: n, k: k, x: x, ldx: k, w: w, ldy: n, pool: nil)
                    XCTAssertEqual(rc, 0)
                    for i in 0..<m {
                        for j in 0..<n {
                            var mag = 0.0
                            for t in 0..<k { mag += abs(Double(x[i * k + t]) * Double(wf[j * k + t])) }
                            XCTAssertEqual(Double(got[i * n + j]), Double(want[i * n + j]),
                                           accuracy: 2 * Double(k + 16) * Double(Float.ulpOfOne) * mag,
                                           "\(Self.name(type)) \(String(cString: weft_isa_name(isa))) m=\(m) k=\(k) (\(i), \(j))")
                        }
                    }
                }
            }
        }
    }

    /// The scratch contract: the panel path's scratch is x packed for up to 512
    /// rows plus per-thread panel blocks (which do not grow with m or n);
    /// weft_wgemm_scratch_bytes covers the chosen path and never decreases as
    /// m grows; one byte less is refused with nothing written.
    func testScratchContract() throws {
        for type in Self.supportedTypes where type != 0 {
            let bigK = 2048, bigN = 2048
            for threads: Int32 in [1, 2] {
                let n = bigN, k = bigK
                let panel1 = weft_wgemm_path_scratch_bytes(Self.panel, type, 1, Int32(n), Int32(k), threads)
                XCTAssertGreaterThan(panel1, 0)
                for m in [2, 100, 512, 513, 4096] {  // grows by k floats per row, up to 512 rows
                    XCTAssertEqual(weft_wgemm_path_scratch_bytes(Self.panel, type, Int32(m), Int32(n), Int32(k), threads),
                                   panel1 + (min(m, 512) - 1) * k * 4, "\(Self.name(type)) m=\(m)")
                }
                XCTAssertEqual(weft_wgemm_path_scratch_bytes(Self.panel, type, 1, 7 * Int32(n), Int32(k), threads), panel1,
                               "\(Self.name(type)): the panel scratch does not grow with n")
                XCTAssertLessThanOrEqual(panel1 - k * 4, Int(threads) * 1_200_000, "\(Self.name(type)): per-thread panels, not a dequantized matrix")
                var previous = 0
                for m in 1...600 {
                    let s = weft_wgemm_scratch_bytes(type, Int32(m), Int32(n), Int32(k), threads)
                    let chosen = weft_wgemm_choose(type, Int32(m), Int32(n), Int32(k), threads)
                    XCTAssertTrue(chosen == Self.dot || chosen == Self.panel || chosen == Self.int)
                    XCTAssertGreaterThanOrEqual(s, weft_wgemm_path_scratch_bytes(chosen, type, Int32(m), Int32(n), Int32(k), threads))
                    XCTAssertGreaterThanOrEqual(s, previous, "\(Self.name(type)) m=\(m): scratch decreased")
                    previous = s
                }
            }
            // One byte short: -1, y untouched.
            let m = 3, n = 40, k = Int(weft_wtype_block_elements(type)) == 256 ? 256 : 64
            var rng = TestRandom(seed: 1)
            let w = Self.weights(type, n: n, k: k, &rng), x = rng.floats(m * k)
            for path in [Self.auto, Self.dot, Self.panel, Self.int] {
                let need = path == Self.auto ? weft_wgemm_scratch_bytes(type, Int32(m), Int32(n), Int32(k), 1)
                    : weft_wgemm_path_scratch_bytes(path, type, Int32(m), Int32(n), Int32(k), 1)
                if need == 0 { continue }
                var scratch = [UInt8](repeating: 0, count: need)
                var y = [Float](repeating: -7, count: m * n)
                let rc = scratch.withUnsafeMutableBytes { s in
                    w.withUnsafeBytes { wb in
                        weft_wgemm_path(path, type, Int32(m), Int32(n), Int32(k), x, k, wb.baseAddress, &y, n, s.baseAddress, need - 1, nil)
                    }
                }
                XCTAssertEqual(rc, -1, "\(Self.name(type)) path \(path) with one byte short")
                XCTAssertTrue(y.allSatisfy { $0 == -7 })
            }
        }
        XCTAssertEqual(weft_wgemm_path_scratch_bytes(Self.dot, 1, 4, 10, 64, 1), 64, "16-bit decode needs no scratch beyond the nominal 64 bytes")
    }

    /// Small batches stream the weights (dot path); prefill batches use the
    /// integer path where weft_igemm takes the format (on a SIMD ISA), panels
    /// otherwise.
    func testChoice() {
        defer { weft_isa_select(weft_isa_detect()) }
        for type in Self.supportedTypes where type != 0 {
            let k: Int32 = 2048
            for threads: Int32 in [1, 2] {
                let prefill = weft_igemm_supported(type) != 0 && weft_isa_current() != WEFT_ISA_SCALAR ? Self.int : Self.panel
                XCTAssertEqual(weft_wgemm_choose(type, 512, 2048, k, threads), prefill, Self.name(type))
                if weft_wgemm_path_scratch_bytes(Self.dot, type, 1, 2048, k, threads) > 0 {
                    XCTAssertEqual(weft_wgemm_choose(type, 1, 2048, k, threads), Self.dot, Self.name(type))
                }
            }
        }
        XCTAssertEqual(weft_wgemm_choose(0, 1, 16, 64, 1), 0, "F32 is the packed GEMM's, not weft_wgemm's")
        weft_isa_select(WEFT_ISA_SCALAR)
        XCTAssertEqual(weft_wgemm_choose(2, 512, 2048, 2048, 1), Self.panel, "no integer path on the scalar ISA")
    }

    func testRejectsBadArguments() {
        let k = 64, n = 4, m = 2
        let w = [UInt8](repeating: 0, count: 34 * 2 * n), x = [Float](repeating: 1, count: m * k)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        func call(_ path: Int32 = WGemmTests.auto, type: Int32 = 8, m: Int32 = 2, n: Int32 = 4, k: Int32 = 64,
                  nullX: Bool = false, ldx: Int = 64, nullW: Bool = false, nullY: Bool = false, ldy: Int = 4,
                  nullScratch: Bool = false) -> (Int32, [Float]) {
            var out = [Float](repeating: -7, count: 64)
            let rc = buffer.withUnsafeMutableBytes { s in
                x.withUnsafeBufferPointer { xb in
                    w.withUnsafeBytes { wb in
                        out.withUnsafeMutableBufferPointer { o in
                            weft_wgemm_path(path, type, m, n, k, nullX ? nil : xb.baseAddress, ldx, nullW ? nil : wb.baseAddress,
                                            nullY ? nil : o.baseAddress, ldy, nullScratch ? nil : s.baseAddress, s.count, nil)
                        }
                    }
                }
            }
            return (rc, out)
        }
        XCTAssertEqual(call().0, 0)
        let bad: [(String, (Int32, [Float]))] = [
            ("F32", call(type: 0)), ("type 7", call(type: 7)), ("type 99", call(type: 99)), ("type -1", call(type: -1)),
            ("m 0", call(m: 0)), ("n -1", call(n: -1)), ("k 0", call(k: 0)), ("k 33", call(k: 33)), ("k -32", call(k: -32)),
            ("null x", call(nullX: true)), ("null w", call(nullW: true)), ("null y", call(nullY: true)), ("null scratch", call(nullScratch: true)),
            ("ldx < k", call(ldx: 63)), ("ldy < n", call(ldy: 3)), ("path 4", call(4)), ("path -1", call(-1)),
        ]
        for (label, (rc, y)) in bad {
            XCTAssertEqual(rc, -1, label)
            XCTAssertTrue(y.allSatisfy { $0 == -7 }, "\(label): y written")
        }
        XCTAssertEqual(weft_wgemm_scratch_bytes(8, 0, 4, 64, 1), 0)
        XCTAssertEqual(weft_wgemm_scratch_bytes(8, 1, 4, 64, 0), 0)
        XCTAssertEqual(weft_wgemm_scratch_bytes(8, 1, 4, 48, 1), 0)
        XCTAssertEqual(weft_wgemm_scratch_bytes(0, 1, 4, 64, 1), 0)
        XCTAssertEqual(call(n: 0).0, 0, "n = 0 is an empty product")
        // The same bad arguments through the public entry point.
        x.withUnsafeBufferPointer { xb in
            var y = [Float](repeating: -7, count: 8)
            XCTAssertEqual(weft_wgemm(8, 2, 4, 64, xb.baseAddress, 64, nil, &y, 4, &buffer, buffer.count, nil), -1)
            XCTAssertEqual(weft_wgemm(8, 2, 4, 64, xb.baseAddress, 64, w, &y, 4, &buffer, 10, nil), -1)
            XCTAssertTrue(y.allSatisfy { $0 == -7 })
        }
    }

    /// The thread split is weft_split_range over the rows: contiguous, covering.
    func testThreadRows() {
        for type in Self.supportedTypes {
            for n in [0, 1, 31, 2048, 2049] {
                for count: Int32 in 1...3 {
                    var next = 0
                    for index in 0..<count {
                        var b = 0, e = 0, sb = 0, se = 0
                        weft_wgemm_thread_rows(type, Int32(n), count, index, &b, &e)
                        weft_split_range(n, count, index, &sb, &se)
                        XCTAssertEqual(b, next)
                        XCTAssertEqual([b, e], [sb, se])
                        next = e
                    }
                    XCTAssertEqual(next, n)
                }
            }
        }
    }

    // MARK: - row conversions

    /// F16 and BF16 rounding to nearest even against known bit patterns.
    func testSixteenBitRounding() {
        func f16(_ f: Float) -> UInt16 {
            var h: UInt16 = 0
            XCTAssertEqual(weft_quantize_row(1, [f], &h, 1), 0)
            return h
        }
        func bf16(_ f: Float) -> UInt16 {
            var h: UInt16 = 0
            XCTAssertEqual(weft_quantize_row(30, [f], &h, 1), 0)
            return h
        }
        let f16Cases: [(Float, UInt16)] = [
            (1, 0x3C00), (-2, 0xC000), (0, 0), (-0.0, 0x8000), (65504, 0x7BFF), (65520, 0x7C00), (.infinity, 0x7C00),
            (1 + 0x1p-11, 0x3C00), (1 + 3 * 0x1p-11, 0x3C02), (1 + 0x1p-11 + 0x1p-20, 0x3C01),  // ties to even, above a tie
            (0x1p-24, 0x0001), (0x1p-25, 0x0000), (0x1.8p-25, 0x0001), (0x1p-14, 0x0400), (0.1, 0x2E66),
        ]
        for (f, h) in f16Cases { XCTAssertEqual(f16(f), h, "F16 of \(f)") }
        let bf16Cases: [(Float, UInt16)] = [
            (1, 0x3F80), (-2.5, 0xC020), (1 + 0x1p-8, 0x3F80), (1 + 3 * 0x1p-8, 0x3F82),
            (Float(bitPattern: 0x3F80_8001), 0x3F81), (.greatestFiniteMagnitude, 0x7F80), (-.infinity, 0xFF80),
            (0.1, 0x3DCD), (Float(bitPattern: 0x0000_8000), 0x0000), (Float(bitPattern: 0x0001_8000), 0x0002),
        ]
        for (f, h) in bf16Cases { XCTAssertEqual(bf16(f), h, "BF16 of \(f)") }
        let nan = Float(bitPattern: 0x7F80_0001)  // signaling: must stay a NaN, not become infinity
        XCTAssertEqual(bf16(nan) & 0x7F80, 0x7F80)
        XCTAssertNotEqual(bf16(nan) & 0x7F, 0)
        XCTAssertEqual(f16(nan) & 0x7C00, 0x7C00)
        XCTAssertNotEqual(f16(nan) & 0x3FF, 0)
    }

    /// 16-bit rows survive dequantize then quantize bit for bit (every finite
    /// pattern); block rows come back within their quantization step.
    func testRoundTrips() {
        var rng = TestRandom(seed: 77)
        for type: Int32 in [1, 30] {
            let k = 4096
            var h = (0..<k).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
            let expMask: UInt16 = type == 1 ? 0x7C00 : 0x7F80
            h = h.map { ($0 & expMask) == expMask ? $0 & ~0x4000 : $0 }  // no NaN or infinity
            var f = [Float](repeating: 0, count: k)
            var back = [UInt16](repeating: 0, count: k)
            XCTAssertEqual(weft_dequantize_row(type, h, &f, Int64(k)), 0)
            XCTAssertEqual(weft_quantize_row(type, f, &back, Int64(k)), 0)
            XCTAssertEqual(back, h, Self.name(type))
        }
        for type: Int32 in [8, 2, 3] {
            let k = 32 * 40
            let x = rng.floats(k, scale: 4)
            let rowBytes = weft_wtype_row_bytes(type, Int64(k)), blockBytes = Int(weft_wtype_block_bytes(type))
            var q = [UInt8](repeating: 0, count: rowBytes)
            var back = [Float](repeating: 0, count: k)
            XCTAssertEqual(weft_quantize_row(type, x, &q, Int64(k)), 0)
            XCTAssertEqual(weft_dequantize_row(type, q, &back, Int64(k)), 0)
            for b in 0..<(k / 32) {
                let d = abs(weft_fp16_to_fp32(UInt16(q[b * blockBytes]) | UInt16(q[b * blockBytes + 1]) << 8))
                let mn = type == 3 ? abs(weft_fp16_to_fp32(UInt16(q[b * blockBytes + 2]) | UInt16(q[b * blockBytes + 3]) << 8)) : 0
                for i in (b * 32)..<(b * 32 + 32) {
                    // Q4_0 puts -8 steps on the side of the largest magnitude, so the other side
                    // clamps at +7 steps: up to one whole step there.
                    let steps: Float = type == 2 ? 1.05 : 0.6
                    XCTAssertEqual(back[i], x[i], accuracy: steps * d + mn * 0x1p-10 + 1e-6, "\(Self.name(type)) element \(i)")
                }
            }
        }
        // Every supported format dequantizes; a k off the block is refused.
        for type in Self.supportedTypes {
            let block = Int(weft_wtype_block_elements(type))
            XCTAssertGreaterThan(block, 0)
            var f = [Float](repeating: 0, count: 512)
            let src = [UInt8](repeating: 0, count: 4096)
            XCTAssertEqual(weft_dequantize_row(type, src, &f, Int64(block)), 0, Self.name(type))
            if block > 1 { XCTAssertEqual(weft_dequantize_row(type, src, &f, Int64(block + 1)), -1, Self.name(type)) }
            XCTAssertEqual(weft_dequantize_row(type, src, &f, 0), -1)
        }
        XCTAssertEqual(weft_dequantize_row(99, [UInt8](repeating: 0, count: 64), nil, 32), -1)
    }
}
