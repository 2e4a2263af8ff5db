import CKernels
import XCTest

/// The fused reduce + residual + RMSNorm kernel against a plain float64
/// reference (sum the peers' partials, add to the residual, RMSNorm).
final class FusedReduceNormTests: XCTestCase {
    func reference(partials: [[Float]], residual: [Float], weight: [Float], rows: Int, dim: Int, eps: Float) -> ([Float], [Float]) {
        var newResidual = residual, out = [Float](repeating: 0, count: rows * dim)
        for r in 0..<rows {
            var sumSquares = 0.0
            for i in 0..<dim {
                let total = Double(residual[r * dim + i]) + partials.reduce(0.0) { $0 + Double($1[r * dim + i]) }
                newResidual[r * dim + i] = Float(total)
                sumSquares += total * total
            }
            let inv = 1 / (sumSquares / Double(dim) + Double(eps)).squareRoot()
            for i in 0..<dim { out[r * dim + i] = Float(Double(weight[i]) * Double(newResidual[r * dim + i]) * inv) }
        }
        return (newResidual, out)
    }

    func check(isa: weft_isa, parts: Int, rows: Int, dim: Int, file: StaticString = #filePath, line: UInt = #line) {
        var rng = SystemRandomNumberGenerator()
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -2...2, using: &rng) } }
        let partials = (0..<parts).map { _ in random(rows * dim) }
        var residual = random(rows * dim)
        let weight = random(dim)
        let (expectedResidual, expectedOut) = reference(partials: partials, residual: residual, weight: weight, rows: rows, dim: dim, eps: 1e-5)
        var out = [Float](repeating: .nan, count: rows * dim)
        let buffers = partials.map { p -> UnsafeMutablePointer<Float> in
            let b = UnsafeMutablePointer<Float>.allocate(capacity: max(p.count, 1))
            b.initialize(from: p, count: p.count)
            return b
        }
        defer { buffers.forEach { $0.deallocate() } }
        var pointers: [UnsafePointer<Float>?] = buffers.map { UnsafePointer($0) }
        switch isa {
        case WEFT_ISA_AVX2:
            weft_reduce_add_rmsnorm_avx2(&pointers, Int32(parts), dim, &residual, dim, weight, &out, dim, Int32(rows), Int32(dim), 1e-5)
        case WEFT_ISA_AVX512:
            weft_reduce_add_rmsnorm_avx512(&pointers, Int32(parts), dim, &residual, dim, weight, &out, dim, Int32(rows), Int32(dim), 1e-5)
        default:
            weft_reduce_add_rmsnorm_scalar(&pointers, Int32(parts), dim, &residual, dim, weight, &out, dim, Int32(rows), Int32(dim), 1e-5)
        }
        for i in 0..<rows * dim {
            XCTAssertEqual(residual[i], expectedResidual[i], accuracy: 1e-5 * Float(parts + 1) * 4, "residual \(i) parts \(parts) dim \(dim)", file: file, line: line)
            XCTAssertEqual(out[i], expectedOut[i], accuracy: 1e-4 * max(1, abs(expectedOut[i])), "out \(i) parts \(parts) dim \(dim)", file: file, line: line)
        }
    }

    func testScalarAgainstReference() {
        for (parts, rows, dim) in [(1, 1, 1), (2, 3, 17), (3, 5, 64), (4, 2, 100), (6, 7, 33)] {
            check(isa: WEFT_ISA_SCALAR, parts: parts, rows: rows, dim: dim)
        }
    }

    func testAVX512AgainstReference() throws {
        guard weft_isa_detect() == WEFT_ISA_AVX512 else { throw XCTSkip("no AVX-512 on this CPU") }
        for (parts, rows, dim) in [(1, 1, 1), (2, 3, 17), (3, 5, 64), (4, 2, 100), (6, 7, 33), (2, 4, 2048)] {
            check(isa: WEFT_ISA_AVX512, parts: parts, rows: rows, dim: dim)
        }
    }

    func testAVX2AgainstReference() throws {
        guard weft_isa_detect().rawValue >= WEFT_ISA_AVX2.rawValue else { throw XCTSkip("no AVX2 on this CPU") }
        for (parts, rows, dim) in [(1, 1, 1), (2, 3, 17), (3, 5, 64), (4, 2, 100), (6, 7, 33), (2, 4, 2048)] {
            check(isa: WEFT_ISA_AVX2, parts: parts, rows: rows, dim: dim)
        }
    }

    func testSumRows() {
        let a: [Float] = [1, 2, 3, 4, 5, 6], b: [Float] = [10, 20, 30, 40, 50, 60]
        var out = [Float](repeating: 0, count: 4)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                var list: [UnsafePointer<Float>?] = [pa.baseAddress, pb.baseAddress]
                weft_sum_rows(&list, 2, 3, &out, 2, 2, 2)   // rows of width 2 at stride 3
            }
        }
        XCTAssertEqual(out, [11, 22, 44, 55])
    }

    func testFlagsWaitReportsTheLaggingPeer() {
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0
        withUnsafeMutablePointer(to: &a) { pa in
            withUnsafeMutablePointer(to: &b) { pb in
                withUnsafeMutablePointer(to: &c) { pc in
                    var flags: [UnsafeMutablePointer<UInt64>?] = [pa, pb, pc]
                    weft_flag_publish(pa, 3)
                    weft_flag_publish(pc, 3)
                    XCTAssertEqual(weft_flags_behind(&flags, 3, -1, 3), 1)
                    XCTAssertEqual(weft_flags_behind(&flags, 3, 1, 3), -1, "the skipped flag does not count")
                    XCTAssertEqual(weft_flags_wait(&flags, 3, -1, 3, 0.05), 1, "times out naming peer 1")
                    weft_flag_publish(pb, 4)
                    XCTAssertEqual(weft_flags_wait(&flags, 3, -1, 3, 0.05), -1)
                }
            }
        }
    }
}
