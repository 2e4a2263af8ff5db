import CKernels
import XCTest

/// ISA selection, the thread pool, weft_split_range and the parallel linear op.
final class DispatchAndPoolTests: XCTestCase {
    override func tearDown() {
        weft_isa_select(weft_isa_detect())
        super.tearDown()
    }

    func testSelectLowersToWhatTheCPUHas() {
        let best = weft_isa_detect()
        XCTAssertEqual(weft_isa_select(WEFT_ISA_AVX512).rawValue, min(best.rawValue, WEFT_ISA_AVX512.rawValue))
        XCTAssertEqual(weft_isa_select(WEFT_ISA_SCALAR), WEFT_ISA_SCALAR)
        XCTAssertEqual(weft_isa_current(), WEFT_ISA_SCALAR)
        XCTAssertEqual(weft_isa_select(best), best)
        XCTAssertEqual(String(cString: weft_isa_name(WEFT_ISA_SCALAR)), "scalar")
        XCTAssertEqual(String(cString: weft_isa_name(WEFT_ISA_AVX2)), "avx2")
        XCTAssertEqual(String(cString: weft_isa_name(WEFT_ISA_AVX512)), "avx512")
    }

    /// The dispatching entry point must give bit for bit the selected path's result.
    func testDispatcherUsesTheSelectedPath() {
        var rng = TestRandom(seed: 31)
        let m = 9, n = 70, k = 1000
        let w = PackedWeight(n: n, k: k, rows: rng.floats(n * k))
        let x = rng.floats(m * k)
        let gate = rng.floats(300, scale: 10), up = rng.floats(300)
        let paths: [(weft_isa, SIMDPath.Gemm, SIMDPath.SiluMul)] = [
            (WEFT_ISA_SCALAR, weft_gemm_packed_scalar, weft_silu_mul_scalar),
            (WEFT_ISA_AVX2, weft_gemm_packed_avx2, weft_silu_mul_avx2),
            (WEFT_ISA_AVX512, weft_gemm_packed_avx512, weft_silu_mul_avx512),
        ]
        for (isa, gemm, silu) in paths where isa.rawValue <= weft_isa_detect().rawValue {
            XCTAssertEqual(weft_isa_select(isa), isa)
            var want = [Float](repeating: 0, count: m * n), got = want
            gemm(Int32(m), 0, Int32(n), Int32(k), x, k, w.packed, &want, n, 0)
            weft_gemm_packed(Int32(m), 0, Int32(n), Int32(k), x, k, w.packed, &got, n, 0)
            XCTAssertEqual(bits(got), bits(want), "weft_gemm_packed with \(String(cString: weft_isa_name(isa))) selected")
            var s1 = [Float](repeating: 0, count: 300), s2 = s1
            silu(gate, up, 300, &s1, 300, 1, 300)
            weft_silu_mul(gate, up, 300, &s2, 300, 1, 300)
            XCTAssertEqual(bits(s2), bits(s1), "weft_silu_mul with \(String(cString: weft_isa_name(isa))) selected")
        }
    }

    func testSplitRangeInvariants() {
        for total in 0...70 {
            for parts in 1...9 {
                var next = 0
                var sizes: [Int] = []
                for index in 0..<parts {
                    var begin = 0, end = 0
                    weft_split_range(total, Int32(parts), Int32(index), &begin, &end)
                    XCTAssertEqual(begin, next, "total \(total) parts \(parts) index \(index): not contiguous")
                    XCTAssertGreaterThanOrEqual(end, begin)
                    sizes.append(end - begin)
                    next = end
                }
                XCTAssertEqual(next, total, "total \(total) parts \(parts): not covered")
                XCTAssertLessThanOrEqual(sizes.max()! - sizes.min()!, 1, "total \(total) parts \(parts): uneven")
                XCTAssertEqual(sizes, sizes.sorted(by: >), "earlier parts take the remainder")
            }
        }
        // Panels: every panel of an n-row weight to exactly one thread.
        let nr = Int(weft_gemm_nr())
        for n in [1, 31, 32, 33, 100, 4096] {
            for threads in 1...5 {
                var next: Int32 = 0
                for t in 0..<threads {
                    var p0: Int32 = 0, p1: Int32 = 0
                    weft_gemm_panel_range(Int32(n), Int32(threads), Int32(t), &p0, &p1)
                    XCTAssertEqual(p0, next)
                    next = p1
                }
                XCTAssertEqual(Int(next), (n + nr - 1) / nr)
            }
        }
    }

    func testPoolRunsEveryThreadOncePerTask() throws {
        for threads in 1...3 {
            let pool = try XCTUnwrap(weft_pool_create(Int32(threads), nil, 100))
            defer { weft_pool_destroy(pool) }
            XCTAssertEqual(weft_pool_size(pool), Int32(threads))
            // Slot i counts the calls of thread i; slot threads + i records the thread count it saw.
            var slots = [Int32](repeating: 0, count: 2 * threads)
            let rounds = 200
            slots.withUnsafeMutableBufferPointer { buffer in
                for _ in 0..<rounds {
                    weft_pool_run(pool, { context, index, count in
                        let slots = context!.assumingMemoryBound(to: Int32.self)
                        slots[Int(index)] += 1
                        slots[Int(count + index)] = count
                    }, buffer.baseAddress)
                }
            }
            XCTAssertEqual(Array(slots[..<threads]), [Int32](repeating: Int32(rounds), count: threads))
            XCTAssertEqual(Array(slots[threads...]), [Int32](repeating: Int32(threads), count: threads))
        }
    }

    func testLinearMatchesTripleLoop() throws {
        var rng = TestRandom(seed: 41)
        for threads in 1...3 {
            let pool = try XCTUnwrap(weft_pool_create(Int32(threads), nil, 1000))
            defer { weft_pool_destroy(pool) }
            for (m, n, k) in [(1, 5, 3), (3, 40, 64), (8, 100, 300), (17, 257, 129), (33, 64, 513)] {
                let ldx = k + 3, ldy = n + 2
                let w = PackedWeight(n: n, k: k, rows: rng.floats(n * k))
                let x = rng.floats(m * ldx)
                let initial = rng.floats(m * ldy)
                var y = initial
                weft_op_linear(pool, Int32(m), Int32(n), Int32(k), x, ldx, w.packed, &y, ldy)
                for i in 0..<m {
                    for j in 0..<ldy {
                        if j >= n {
                            XCTAssertEqual(y[i * ldy + j], initial[i * ldy + j], "padding column written")
                            continue
                        }
                        var sum = 0.0, magnitude = 0.0
                        for kk in 0..<k {
                            let p = Double(x[i * ldx + kk]) * Double(w.rows[j * k + kk])
                            sum += p
                            magnitude += abs(p)
                        }
                        XCTAssertEqual(Double(y[i * ldy + j]), sum, accuracy: 1.2e-7 * Double(k + 1) * magnitude,
                                       "threads \(threads) m=\(m) n=\(n) k=\(k) at (\(i), \(j))")
                    }
                }
            }
        }
    }
}
