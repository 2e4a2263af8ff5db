import CKernels
import XCTest

/// A small deterministic generator (SplitMix64), so a failing case can be replayed.
struct TestRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [lo, hi].
    mutating func int(_ lo: Int, _ hi: Int) -> Int {
        lo + Int(next() % UInt64(hi - lo + 1))
    }

    /// Uniform in [-scale, scale).
    mutating func float(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) * 0x1p-53 * 2 - 1) * scale
    }

    mutating func floats(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in float(scale) }
    }
}

/// One SIMD implementation of every kernel, to be compared with the scalar references.
struct SIMDPath {
    typealias Conversion = @convention(c) (UnsafePointer<UInt16>?, UnsafeMutablePointer<Float>?, Int) -> Void
    typealias Gemm = @convention(c) (Int32, Int32, Int32, Int32, UnsafePointer<Float>?, Int,
                                     UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int, Int32) -> Void
    typealias RMSNorm = @convention(c) (UnsafePointer<Float>?, Int, UnsafePointer<Float>?,
                                        UnsafeMutablePointer<Float>?, Int, Int32, Int32, Float) -> Void
    typealias AddRMSNorm = @convention(c) (UnsafeMutablePointer<Float>?, Int, UnsafePointer<Float>?, Int,
                                           UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int,
                                           Int32, Int32, Float) -> Void
    typealias SiluMul = @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, Int,
                                        UnsafeMutablePointer<Float>?, Int, Int32, Int32) -> Void
    typealias Rope = @convention(c) (UnsafeMutablePointer<Float>?, Int, Int32, Int32, Int32,
                                     UnsafePointer<Int32>?, UnsafePointer<Float>?) -> Void
    typealias Attention = @convention(c) (UnsafePointer<weft_attention_args>?, Int32, Int32) -> Void

    let isa: weft_isa
    let bf16ToF32: Conversion
    let f16ToF32: Conversion
    let gemm: Gemm
    let rmsnorm: RMSNorm
    let addRMSNorm: AddRMSNorm
    let siluMul: SiluMul
    let rope: Rope
    let attention: Attention

    var name: String { String(cString: weft_isa_name(isa)) }

    static var avx512: SIMDPath {
        SIMDPath(isa: WEFT_ISA_AVX512, bf16ToF32: weft_bf16_to_f32_avx512, f16ToF32: weft_f16_to_f32_avx512,
                 gemm: weft_gemm_packed_avx512, rmsnorm: weft_rmsnorm_avx512,
                 addRMSNorm: weft_add_rmsnorm_avx512, siluMul: weft_silu_mul_avx512,
                 rope: weft_rope_avx512, attention: weft_attention_avx512)
    }

    static var avx2: SIMDPath {
        SIMDPath(isa: WEFT_ISA_AVX2, bf16ToF32: weft_bf16_to_f32_avx2, f16ToF32: weft_f16_to_f32_avx2,
                 gemm: weft_gemm_packed_avx2, rmsnorm: weft_rmsnorm_avx2,
                 addRMSNorm: weft_add_rmsnorm_avx2, siluMul: weft_silu_mul_avx2,
                 rope: weft_rope_avx2, attention: weft_attention_avx2)
    }

    /// Returns the path, or throws XCTSkip when this CPU cannot run it.
    static func require(_ path: SIMDPath) throws -> SIMDPath {
        let best = weft_isa_detect()
        if best.rawValue < path.isa.rawValue {
            throw XCTSkip("\(path.name) kernels need a CPU with \(path.name); this one has \(String(cString: weft_isa_name(best)))")
        }
        return path
    }
}

/// A weight [n x k] (row-major) and its packed panels.
struct PackedWeight {
    let n: Int
    let k: Int
    let rows: [Float]
    let packed: [Float]

    init(n: Int, k: Int, rows: [Float]) {
        precondition(rows.count == n * k)
        self.n = n
        self.k = k
        self.rows = rows
        let nr = Int(weft_gemm_nr())
        var packed = [Float](repeating: .nan, count: weft_gemm_packed_floats(Int32(n), Int32(k)))
        rows.withUnsafeBufferPointer { src in
            packed.withUnsafeMutableBufferPointer { dst in
                var p = 0
                while p * nr < n {
                    weft_gemm_pack_panel(src.baseAddress! + p * nr * k, k, Int32(min(nr, n - p * nr)), Int32(k),
                                         dst.baseAddress! + p * nr * k)
                    p += 1
                }
            }
        }
        self.packed = packed
    }
}

extension Array where Element == Float {
    /// Element-wise |x|.
    var magnitudes: [Float] { map { abs($0) } }
}

/// Bit patterns, so that NaN payloads and signed zeros compare exactly.
func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }
