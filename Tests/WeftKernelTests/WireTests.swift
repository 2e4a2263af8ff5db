import CKernels
import XCTest

/// The q8_0 wire format (weft_wire.h): ggml's block_q8_0 per 32 values of a
/// row. The scalar reference against bytes the gguf package (0.19.0) wrote and
/// against a Swift reimplementation of ggml's quantize_row_q8_0_ref; the AVX2
/// path bit for bit against the scalar reference; the defined edge cases.
final class WireTests: XCTestCase {
    typealias Encode = @convention(c) (UnsafePointer<Float>?, UnsafeMutableRawPointer?, Int, Int) -> Void
    typealias Decode = @convention(c) (UnsafeRawPointer?, UnsafeMutablePointer<Float>?, Int, Int) -> Void

    /// Six blocks: random normal; ties at ±k.5 with max 127 (d = 1); negatives
    /// whose largest magnitude is negative; tiny values with one outlier of
    /// 5000; zeros; small random values. Input as float32 bit patterns.
    static let ggufInput: [UInt32] = [
        0xBBDFB32E, 0x3F85E806, 0x3F3DD8BD, 0x3F395537, 0x3FCF340F, 0xBF9A4FBB, 0xBF208027, 0xBFA90B7E,
        0xBDDCAD59, 0x3F7FAEFA, 0xBCB3CC0E, 0x3EFDE3FE, 0xBFF49411, 0x3E1697FD, 0xBF682D6F, 0x3FE33FF6,
        0x3F63088B, 0x3F730891, 0xBD6CF953, 0x3F1CE48B, 0x3F286B7D, 0xBEB0558C, 0xBEFEA78C, 0xBDEB0DFE,
        0xBF1AFEE7, 0xBF1826A1, 0xBE911694, 0xBF3A7996, 0x3F442E0F, 0xBFCC4C8F, 0x3F52D4F8, 0xBF202520,
        0xC2FE0000, 0xC1680000, 0xC1580000, 0xC1480000, 0xC1380000, 0xC1280000, 0xC1180000, 0xC1080000,
        0xC0F00000, 0xC0D00000, 0xC0B00000, 0xC0900000, 0xC0600000, 0xC0200000, 0xBFC00000, 0xBF000000,
        0x3F000000, 0x3FC00000, 0x40200000, 0x40600000, 0x40900000, 0x40B00000, 0x40D00000, 0x40F00000,
        0x41080000, 0x41180000, 0x41280000, 0x41380000, 0x41480000, 0x41580000, 0x41680000, 0x41780000,
        0xBFD1A416, 0xC081AE6B, 0xBEDD8E50, 0xBF3E343C, 0xBF1309BF, 0xBFCCF826, 0xBE90026E, 0xC2200000,
        0xBF9D0E4E, 0xBFDC4C07, 0xC036FF3E, 0xBEC5D6AB, 0xBFE40C3C, 0xBFEB4B86, 0xBF962B53, 0xC0B94EBF,
        0xBF857FBE, 0xBFD3C246, 0xBF91F660, 0xBFA89070, 0xC03C125E, 0xBFD0F086, 0xC06C6B66, 0xC09BB178,
        0xC04F2D44, 0xC05FC4D4, 0xC05295BC, 0xC0D86F8D, 0xBF0EBDBE, 0xBBCCDFAA, 0xBFE797DD, 0xC02E5F9C,
        0xBACB93F7, 0xBA67368E, 0x39C354E0, 0x39F80425, 0xBAC95FA5, 0xBAF6DE8E, 0xB9A5BFE5, 0xB9453109,
        0xB84E5CFE, 0x3A2FFE5F, 0x3AA110D5, 0x39721CCA, 0x3A209C93, 0xBA8F8CDF, 0xBA9A2E59, 0x3977B6BF,
        0x3A2E3CC9, 0x3A3E6160, 0x3A1B623E, 0x3A4D9102, 0x459C4000, 0xBAE5A996, 0xBA407508, 0x39EEA282,
        0x3A1C69FA, 0xBAC63167, 0x3A99C168, 0xB9E61306, 0xB973B70B, 0x398F8F51, 0x3A44832B, 0xBABBD76D,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
        0x3D4ABBEE, 0x3B7D4676, 0xBD1DDCD4, 0xBC6180F6, 0xBDDFD471, 0xBD04A1DD, 0x3C150538, 0xBD1136AA,
        0xBC865AA4, 0xBBF07499, 0x3B1E88D6, 0x3D5106C1, 0xBAA32830, 0xBC54F73A, 0x3CDCA10C, 0x3DD4A545,
        0xBC8C63B3, 0x3CD21207, 0xBDA1841A, 0x3D89C751, 0x3D070AB0, 0x3D887A8B, 0xBB418755, 0xBD559192,
        0x3D35791A, 0x3D1A52DC, 0xBD3191CF, 0xBD96D41C, 0x3CB7F6EA, 0xBC0C6782, 0x3E05BE2E, 0xBCFB9869,
    ]
    /// `gguf.quants.quantize(x.reshape(1, -1), GGMLQuantizationType.Q8_0)`, one block per line.
    static let ggufBytes: [String] = [
        "b423004631306cb0d6a8f942ff21810ac4763b3ffc292ce9dff8d8d8edd0339637d6",
        "003c81f1f2f3f4f5f6f7f8f9fafbfcfdfeff0102030405060708090a0b0c0d0e0f10",
        "0a35fbf3fffefefbff81fcfbf7fffafafceefdfbfcfcf7fbf4f1f6f5f6ebfe00faf7",
        "ec5000000000000000000000000000000000000000007f0000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000",
        "36143004dbf396e109def0f90232fff31a65ef19b3412041fdcd2b25d6b816f87fe2",
    ]

    func encode(_ f: Encode, _ x: [Float], rows: Int, width: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0xA5, count: rows * weft_wire_q8_0_row_bytes(width))
        x.withUnsafeBufferPointer { src in out.withUnsafeMutableBytes { f(src.baseAddress, $0.baseAddress, rows, width) } }
        return out
    }

    func decode(_ f: Decode, _ bytes: [UInt8], rows: Int, width: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: rows * width)
        bytes.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { f(src.baseAddress, $0.baseAddress, rows, width) } }
        return out
    }

    static func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = [], chars = Array(s)
        while chars.count >= 2 { out.append(UInt8(String(chars[0..<2]), radix: 16)!); chars.removeFirst(2) }
        return out
    }

    /// ggml's quantize_row_q8_0_ref written again in Swift (Float arithmetic,
    /// `Float16` for the scale), one row of `width` padded with zeros to whole blocks.
    static func reference(_ row: ArraySlice<Float>) -> [UInt8] {
        let x = Array(row)
        var out: [UInt8] = []
        var start = 0
        while start < x.count {
            var block = Array(x[start..<min(start + 32, x.count)])
            block += [Float](repeating: 0, count: 32 - block.count)
            let amax = block.map { abs($0) }.max()!
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            let scale = Float16(d).bitPattern
            out += [UInt8(scale & 0xFF), UInt8(scale >> 8)]
            out += block.map { UInt8(bitPattern: Int8(($0 * id).rounded(.toNearestOrAwayFromZero))) }
            start += 32
        }
        return out
    }

    var paths: [(String, Encode, Decode)] {
        var list: [(String, Encode, Decode)] = [("scalar", weft_wire_q8_0_encode_scalar, weft_wire_q8_0_decode_scalar),
                                                ("dispatch", weft_wire_q8_0_encode, weft_wire_q8_0_decode)]
        if weft_isa_detect().rawValue >= WEFT_ISA_AVX2.rawValue {
            list.append(("avx2", weft_wire_q8_0_encode_avx2, weft_wire_q8_0_decode_avx2))
        }
        return list
    }

    func testRowBytes() {
        XCTAssertEqual(weft_wire_q8_0_row_bytes(2048), 2048 / 32 * 34)
        XCTAssertEqual(weft_wire_q8_0_row_bytes(32), 34)
        XCTAssertEqual(weft_wire_q8_0_row_bytes(33), 68)
        XCTAssertEqual(weft_wire_q8_0_row_bytes(1), 34)
        XCTAssertEqual(weft_wire_q8_0_row_bytes(0), 0)
    }

    func testMatchesTheGGUFPackage() {
        let x = Self.ggufInput.map { Float(bitPattern: $0) }
        let expected = Self.hex(Self.ggufBytes.joined())
        XCTAssertEqual(expected.count, 6 * 34)
        XCTAssertEqual(Self.reference(x[...]), expected, "the Swift reference differs from the gguf package")
        for (name, enc, dec) in paths {
            // As one row of 192 and as six rows of 32: the same blocks.
            XCTAssertEqual(encode(enc, x, rows: 1, width: 192), expected, name)
            XCTAssertEqual(encode(enc, x, rows: 6, width: 32), expected, name)
            // gguf's dequantize: q * d in float32.
            let want: [Float] = (0..<192).map { i in
                let b = i / 32, at = b * 34
                let d = Float(Float16(bitPattern: UInt16(expected[at]) | UInt16(expected[at + 1]) << 8))
                return Float(Int8(bitPattern: expected[at + 2 + i % 32])) * d
            }
            XCTAssertEqual(bits(decode(dec, expected, rows: 1, width: 192)), bits(want), name)
        }
        // The ties block: d = 1 and x = k + 0.5 rounds away from zero.
        XCTAssertEqual(Array(expected[34..<36]), [0x00, 0x3C])
        XCTAssertEqual(Int8(bitPattern: expected[34 + 2 + 1]), -15)   // -14.5
        XCTAssertEqual(Int8(bitPattern: expected[34 + 2 + 16]), 1)    //   0.5
        XCTAssertEqual(Int8(bitPattern: expected[34 + 2 + 17]), 2)    //   1.5
    }

    /// Random rows of many widths (whole blocks and padded last blocks) and
    /// scales: every path writes the reference's bytes; decoding is exact q * d.
    func testAgainstTheReferenceAndEachOther() {
        var rng = TestRandom(seed: 42)
        for width in [1, 5, 31, 32, 33, 63, 64, 96, 100, 2048] {
            for scale: Float in [1e-6, 0.01, 1, 300, 60000] {
                let rows = 3
                var x = rng.floats(rows * width, scale: scale)
                // Ties: whole-number multiples of half a step in one row.
                if width >= 32 { for j in 0..<32 { x[j] = Float(j - 16) + 0.5 }; x[5] = 127 }
                var expected: [UInt8] = []
                for r in 0..<rows { expected += Self.reference(x[(r * width)..<((r + 1) * width)]) }
                let scalarBytes = encode(weft_wire_q8_0_encode_scalar, x, rows: rows, width: width)
                XCTAssertEqual(scalarBytes, expected, "scalar width \(width) scale \(scale)")
                let scalarFloats = decode(weft_wire_q8_0_decode_scalar, scalarBytes, rows: rows, width: width)
                for (name, enc, dec) in paths {
                    XCTAssertEqual(encode(enc, x, rows: rows, width: width), scalarBytes, "\(name) width \(width) scale \(scale)")
                    XCTAssertEqual(bits(decode(dec, scalarBytes, rows: rows, width: width)), bits(scalarFloats),
                                   "\(name) decode width \(width) scale \(scale)")
                }
                // Error bound: half a step plus the scale's fp16 rounding (2^-11 relative) times 127,
                // where the scale is a normal fp16 (d >= 2^-14; below, its precision thins out).
                for r in 0..<rows where scale / 127 >= 0x1p-14 {
                    for b in stride(from: 0, to: width, by: 32) {
                        let range = (r * width + b)..<(r * width + min(b + 32, width))
                        let amax = x[range].map { abs($0) }.max()!
                        let worst = range.map { abs(scalarFloats[$0] - x[$0]) }.max()!
                        XCTAssertLessThanOrEqual(worst, amax / 127 * (0.5 + 127 * 0x1p-11) * 1.0001,
                                                 "width \(width) scale \(scale) row \(r) block \(b / 32)")
                    }
                }
            }
        }
    }

    func testZeroBlock() {
        for (name, enc, dec) in paths {
            let bytes = encode(enc, [Float](repeating: 0, count: 40), rows: 1, width: 40)
            XCTAssertEqual(bytes, [UInt8](repeating: 0, count: 68), name)
            XCTAssertEqual(bits(decode(dec, bytes, rows: 1, width: 40)), [UInt32](repeating: 0, count: 40), name)
            // Negative zeros quantize as zeros too (q = 0, d = +0).
            XCTAssertEqual(encode(enc, [Float](repeating: -0.0, count: 32), rows: 1, width: 32), [UInt8](repeating: 0, count: 34), name)
        }
    }

    /// A block's values are relative to its largest: 1e-3 next to 5000 is lost,
    /// the neighbouring block keeps its own scale. Magnitudes from 65520 * 127
    /// overflow the fp16 scale as in ggml: ±inf (q != 0) and NaN (q == 0).
    func testHugeValues() {
        var x = [Float](repeating: 1e-3, count: 64)
        x[3] = 5000
        for (name, enc, dec) in paths {
            let y = decode(dec, encode(enc, x, rows: 1, width: 64), rows: 1, width: 64)
            XCTAssertEqual(y[3], 5000, accuracy: 5000 * 0x1p-10, name)
            XCTAssertEqual(y[0], 0, name)
            // d = 1e-3 / 127 is an fp16 subnormal (below 2^-14): 0.5 % relative here.
            XCTAssertEqual(y[40], 1e-3, accuracy: 1e-3 * 0.005, name)
        }
        var big = [Float](repeating: 1, count: 32)
        big[0] = 8.0e6          // d = 62992: still finite
        big[1] = -8.0e6
        big[2] = 0
        for (name, enc, dec) in paths {
            let y = decode(dec, encode(enc, big, rows: 1, width: 32), rows: 1, width: 32)
            XCTAssertEqual(y[0], 8.0e6, accuracy: 8.0e6 * 0x1p-10, name)
            XCTAssertEqual(y[1], -8.0e6, accuracy: 8.0e6 * 0x1p-10, name)
            XCTAssertEqual(y[2], 0, name)
        }
        big[0] = 9.0e6
        big[1] = -9.0e6
        big[3] = 1e5
        for (name, enc, dec) in paths {
            let bytes = encode(enc, big, rows: 1, width: 32)
            XCTAssertEqual(Array(bytes[0..<2]), [0x00, 0x7C], "\(name): d = fp16 +inf")
            XCTAssertEqual(bytes, Self.reference(big[...]), name)
            let y = decode(dec, bytes, rows: 1, width: 32)
            XCTAssertEqual(y[0], .infinity, name)
            XCTAssertEqual(y[1], -.infinity, name)
            XCTAssertTrue(y[2].isNaN, name)                 // 0 * inf
            XCTAssertEqual(y[3], .infinity, name)           // q = 1
        }
    }

    /// NaN or ±inf anywhere in a block: d = fp16 NaN, q = 0, the block decodes
    /// to 32 NaNs; the other blocks of the row are untouched.
    func testNonFiniteBlocksDecodeToNaN() {
        var rng = TestRandom(seed: 5)
        for poison: Float in [.nan, -.nan, .infinity, -.infinity, Float(bitPattern: 0x7F80_0001)] {
            var x = rng.floats(100)
            x[37] = poison            // block 1
            for (name, enc, dec) in paths {
                let bytes = encode(enc, x, rows: 1, width: 100)
                XCTAssertEqual(Array(bytes[34..<68]), [0x00, 0x7E] + [UInt8](repeating: 0, count: 32), "\(name) \(poison)")
                var clean = x
                clean[32..<64] = ArraySlice(repeating: 0, count: 32)
                let cleanBytes = encode(enc, clean, rows: 1, width: 100)
                XCTAssertEqual(Array(bytes[0..<34]) + Array(bytes[68...]), Array(cleanBytes[0..<34]) + Array(cleanBytes[68...]), name)
                let y = decode(dec, bytes, rows: 1, width: 100)
                XCTAssertTrue(y[32..<64].allSatisfy(\.isNaN), "\(name) \(poison)")
                XCTAssertFalse(y[0..<32].contains(where: \.isNaN), name)
                XCTAssertFalse(y[64...].contains(where: \.isNaN), name)
            }
        }
    }

    /// Blocks whose scale is a float32 subnormal (1/d may overflow to inf and
    /// x * id to NaN, undefined in ggml's C): q is defined (clamped, NaN -> 0),
    /// the fp16 scale is 0, the block decodes to zeros, the same in every path.
    func testTinyBlocks() {
        var rng = TestRandom(seed: 9)
        for scale: Float in [1e-40, 1e-43, Float.leastNonzeroMagnitude * 3] {
            var x = rng.floats(64, scale: scale)
            x[0] = 0
            x[1] = scale
            let scalar = encode(weft_wire_q8_0_encode_scalar, x, rows: 1, width: 64)
            XCTAssertEqual(Array(scalar[0..<2]), [0, 0])
            for (name, enc, dec) in paths {
                XCTAssertEqual(encode(enc, x, rows: 1, width: 64), scalar, "\(name) \(scale)")
                XCTAssertTrue(decode(dec, scalar, rows: 1, width: 64).allSatisfy { $0 == 0 }, "\(name) \(scale)")
            }
        }
    }

    /// A width that is not a multiple of 32: each row's last block is its own,
    /// padded with zeros, and decoding writes exactly `width` values per row.
    func testPaddedRowsStayApart() {
        let width = 40, rows = 2
        var x = [Float](repeating: 0.25, count: rows * width)
        x[width + 2] = 100   // row 1, block 0
        x[39] = -3           // row 0, its padded last block
        for (name, enc, dec) in paths {
            let bytes = encode(enc, x, rows: rows, width: width)
            XCTAssertEqual(bytes.count, rows * 68)
            // Row 0's padded block: 8 values with max 3, then 24 zero bytes of padding.
            XCTAssertEqual(Array(bytes[36 + 8..<68]), [UInt8](repeating: 0, count: 24), name)
            var y = [Float](repeating: 7, count: rows * width + 5)
            bytes.withUnsafeBytes { src in y.withUnsafeMutableBufferPointer { dec(src.baseAddress, $0.baseAddress, rows, width) } }
            XCTAssertEqual(Array(y[(rows * width)...]), [7, 7, 7, 7, 7], "\(name) wrote past the last row")
            XCTAssertEqual(y[39], -3, accuracy: 3 * 0x1p-10, name)
            XCTAssertEqual(y[38], 0.25, accuracy: 3.0 / 254 * 1.01, name)
            XCTAssertEqual(y[width + 2], 100, accuracy: 100 * 0x1p-10, name)
            XCTAssertEqual(y[width + 39], 0.25, accuracy: 0.25 / 254 * 1.01, name)   // row 1's last block: its own scale
        }
    }
}
