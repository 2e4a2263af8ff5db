import CKernels
import Foundation
import WeftModel
import WeftSchedule
import WeftTensor
import XCTest

/// GGUF files of the tiny Llama (Tests/Fixtures/gguf-model, made by its
/// make_gguf_models.py with the gguf package) against a float64 NumPy
/// forward pass over the same weights as gguf.quants.dequantize reads them.
final class GGUFModelTests: XCTestCase {
    static let folder = Fixtures.tinyLlama.deletingLastPathComponent().appendingPathComponent("gguf-model")

    struct Reference: Decodable {
        struct File: Decodable {
            let file: String
            let logits: [[[Float]]]
            /// Each product's input rounded to 8-bit blocks first (llama.cpp's arithmetic).
            let logits_8bit_activations: [[[Float]]]?
            let types: [String]
        }
        let sequences: [[Int]]
        let files: [String: File]
    }
    static let reference: Reference = try! JSONDecoder().decode(
        Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))

    static func source(_ kind: String) throws -> GGUFSource {
        try GGUFSource(path: folder.appendingPathComponent("tiny-llama-\(kind).gguf").path)
    }

    func logits(_ model: TestDecoder, _ tokens: [Int], sequence: Int = 0) throws -> [Float] {
        var batch = FlatBatch()
        batch.append(sequence: sequence, tokens: tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
        defer { model.cache.release(sequence: sequence) }
        return try model.forward(batch)
    }

    func testConfigFromMetadataEqualsConfigJSON() throws {
        let fromJSON = try ModelConfig.load(directory: Fixtures.tinyLlama)
        for kind in ["f32", "q4_k"] {
            var config = try Self.source(kind).config
            // GGUF stores the epsilon as a float32.
            XCTAssertEqual(config.rmsNormEps, Double(Float(fromJSON.rmsNormEps)), kind)
            config.rmsNormEps = fromJSON.rmsNormEps
            XCTAssertEqual(config, fromJSON, kind)
        }
    }

    /// Each file's logits at TP 1 against the float64 reference of its own
    /// (dequantized) weights. The quantized files' matrices multiply 8-bit
    /// activation blocks (Q8_0, Q8_K) as llama.cpp's do, so their logits
    /// carry that rounding: Weft's deviation must be no larger than the
    /// deviation of the same rounding done in NumPy (reference.json's
    /// logits_8bit_activations; about 1.5 % of the largest logit on this tiny
    /// random model, which amplifies single rounding flips: the same NumPy
    /// computation in float32 instead of float64 moves as much). The
    /// products themselves are checked exactly in
    /// testBlockProductsAreExactOverRoundedActivations.
    func testLogitsMatchFloat64Reference() throws {
        for kind in ["f16", "f32", "q4_k", "q8_0"] {
            let source = try Self.source(kind)
            let model = try Fixtures.model(source: source, config: source.config)
            let expected = Self.reference.files[kind]!
            for (i, tokens) in Self.reference.sequences.enumerated() {
                let actual = try logits(model, tokens)
                let exact = expected.logits[i].flatMap { $0 }
                if let rounded = expected.logits_8bit_activations?[i].flatMap({ $0 }) {
                    let scale = exact.map(abs).max()!
                    let allowed = 1.5 * zip(rounded, exact).map { abs($0 - $1) }.max()! / scale
                    XCTAssertLessThan(allowed, 0.05, "the rounding's own effect stays small")
                    Fixtures.assertClose(actual, exact, relative: allowed, "\(kind) sequence \(i)")
                } else {
                    Fixtures.assertClose(actual, exact, relative: 1e-4, "\(kind) sequence \(i)")
                }
            }
            // The matrices are held as stored, not widened.
            let formats = model.weights.formatDescription
            switch kind {
            case "f32": XCTAssertEqual(formats, "f32")
            case "f16": XCTAssertEqual(formats, "f16")
            case "q8_0": XCTAssertEqual(formats, "q8_0+f16")
            default: XCTAssertEqual(formats, "q4_K+f16+q8_0")
            }
        }
    }

    /// The float32 GGUF (q/k permuted as llama.cpp writes them) gives exactly
    /// the logits of the safetensors checkpoint it was made from.
    func testF32GGUFEqualsSafetensorsBitForBit() throws {
        let source = try Self.source("f32")
        let gguf = try Fixtures.model(source: source, config: source.config)
        let config = try ModelConfig.load(directory: Fixtures.tinyLlama)
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 1)
        let pool = try ComputePool(threads: 2, pin: false)
        let weights = try LlamaWeights(config: config, plan: plan, source: CheckpointSource(directory: Fixtures.tinyLlama),
                                       pool: pool, node: nil, format: .f32)
        let safetensors = TestDecoder(LlamaModel(weights: weights, communicator: Fixtures.world, pool: pool,
                                                 cache: PagedKVCache(layerCount: config.layerCount, blockSize: 4, blockCount: 64,
                                                                     kvWidth: plan.kvHeads.count * config.headDim, node: nil)))
        for tokens in Self.reference.sequences {
            XCTAssertEqual(try logits(gguf, tokens), try logits(safetensors, tokens))
        }
    }

    /// `format: .q8_0` on the bf16 checkpoint quantizes at load to exactly
    /// the bytes the gguf package's quantizer wrote into the Q8_0 file.
    func testQuantizeAtLoadEqualsGGUFPackageBytes() throws {
        let config = try ModelConfig.load(directory: Fixtures.tinyLlama)
        let plan = try TensorParallelPlan(config: config, rank: 0, size: 1)
        let pool = try ComputePool(threads: 2, pin: false)
        let loaded = try LlamaWeights(config: config, plan: plan, source: CheckpointSource(directory: Fixtures.tinyLlama),
                                      pool: pool, node: nil, format: .q8_0)
        let source = try Self.source("q8_0")
        let file = try LlamaWeights(config: source.config, plan: plan, source: source, pool: pool, node: nil)
        func bytes(_ linear: Linear) -> [UInt8] {
            linear.parts.flatMap { part -> [UInt8] in
                guard case .blocks(let w) = part else { return [] }
                return Array(UnsafeRawBufferPointer(start: w.storage.pointer, count: w.byteCount))
            }
        }
        for i in 0..<config.layerCount {
            let a = loaded.layers[i], b = file.layers[i]
            XCTAssertEqual(a.qkv.formatDescription, "q8_0")
            XCTAssertEqual(bytes(a.qkv), bytes(b.qkv), "layer \(i) q/k/v")
            XCTAssertEqual(bytes(a.output), bytes(b.output), "layer \(i) o")
            XCTAssertEqual(bytes(a.gateUp!), bytes(b.gateUp!), "layer \(i) gate/up")
            // 688 columns are not a multiple of 32: kept 16-bit in both.
            XCTAssertEqual(a.down!.formatDescription, "bf16")
            XCTAssertEqual(b.down!.formatDescription, "f16")
        }
        XCTAssertEqual(loaded.conversions.count, 1)
        XCTAssertTrue(loaded.conversions[0].contains("down_proj"), loaded.conversions[0])
    }

    /// A split that cuts a tensor's blocks converts that tensor (on every
    /// rank alike) and says so; the result still matches the reference.
    func testUnalignedSplitConvertsToQ8_0() throws {
        let source = try Self.source("q4_k")
        let config = source.config
        let pool = try ComputePool(threads: 1, pin: false)
        for rank in 0..<2 {
            let plan = try TensorParallelPlan(config: config, rank: rank, size: 2, intermediateAlignment: 256)
            let weights = try LlamaWeights(config: config, plan: plan, source: source, pool: pool, node: nil)
            // o_proj: 4 heads × 32 = 128 columns per rank, half a Q4_K block.
            XCTAssertEqual(weights.layers[0].output.formatDescription, "q8_0")
            XCTAssertEqual(weights.layers[0].qkv.formatDescription, "q4_K")
            XCTAssertEqual(weights.conversions.count, 1, "\(weights.conversions)")
            XCTAssertTrue(weights.conversions[0].contains("self_attn.o_proj.weight") && weights.conversions[0].contains("converted to q8_0"),
                          weights.conversions[0])
        }
    }

    /// On the files' real weights, every block-format product at decode sizes
    /// equals (to float32 rounding) the exact product of the dequantized
    /// weights with the activations rounded to Q8_0 (Q8_K for k-quants), at
    /// prefill sizes too where the integer path takes the format, else the
    /// exact product with float32 activations.
    func testBlockProductsAreExactOverRoundedActivations() throws {
        for kind in ["q8_0", "q4_k"] {
            let source = try Self.source(kind)
            let model = try Fixtures.model(source: source, config: source.config)
            let layer = model.weights.layers[1]
            for linear in [layer.qkv, layer.output, layer.gateUp!, model.weights.lmHead] {
                for part in linear.parts {
                    guard case .blocks(let w) = part, w.format != .f16 else { continue }
                    let k = w.inFeatures, n = w.outFeatures
                    for m in [1, 3, 7, 40] {
                        var x = [Float](repeating: 0, count: m * k)
                        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(m)
                        for i in 0..<x.count {
                            seed = seed &* 6364136223846793005 &+ 1442695040888963407
                            x[i] = Float(Int64(seed >> 40) - (1 << 23)) / Float(1 << 23)
                        }
                        let y = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
                        defer { y.deallocate() }
                        x.withUnsafeBufferPointer { w.apply(pool: model.pool, rows: m, x: $0.baseAddress!, ldx: k, y: y, ldy: n) }
                        // The dot (decode) and integer (prefill) paths round the
                        // activations as ggml does; the panel path multiplies
                        // them in float32.
                        var rounded = x
                        let path = weft_wgemm_choose(w.format.rawValue, Int32(m), Int32(n), Int32(k), Int32(model.pool.threadCount))
                        if path == Int32(WEFT_WGEMM_DOT.rawValue) || path == Int32(WEFT_WGEMM_INT.rawValue) {
                            for i in 0..<m {
                                x.withUnsafeBufferPointer { xp in rounded.withUnsafeMutableBufferPointer { rp in
                                    let row = xp.baseAddress! + i * k, out = rp.baseAddress! + i * k
                                    if w.format.blockElements == 256 {
                                        var blocks = [weft_block_q8_K](repeating: weft_block_q8_K(), count: k / 256)
                                        weft_quantize_row_q8_K(row, &blocks, Int64(k))
                                        weft_dequantize_row_q8_K(blocks, out, Int64(k))
                                    } else {
                                        var blocks = [weft_block_q8_0](repeating: weft_block_q8_0(), count: k / 32)
                                        weft_quantize_row_q8_0(row, &blocks, Int64(k))
                                        weft_dequantize_row_q8_0(blocks, out, Int64(k))
                                    }
                                } }
                            }
                        }
                        var wrow = [Float](repeating: 0, count: k)
                        var worst = 0.0, scale = 0.0
                        for j in 0..<n {
                            wrow.withUnsafeMutableBufferPointer { w.dequantizeRow(j, into: $0.baseAddress!) }
                            for i in 0..<m {
                                var sum = 0.0, magnitude = 0.0
                                for c in 0..<k {
                                    sum += Double(wrow[c]) * Double(rounded[i * k + c])
                                    magnitude += abs(Double(wrow[c]) * Double(rounded[i * k + c]))
                                }
                                worst = max(worst, abs(sum - Double(y[i * n + j])))
                                scale = max(scale, magnitude)
                            }
                        }
                        XCTAssertLessThan(worst, 1e-6 * scale, "\(kind) \(w.format) \(n)x\(k) m \(m)")
                    }
                }
            }
        }
    }

    func testBF16CheckpointStays16Bit() throws {
        let model = try Fixtures.model()
        XCTAssertEqual(model.weights.formatDescription, "bf16")
        let bytes = model.weights.byteCount
        let parameters = try ModelConfig.load(directory: Fixtures.tinyLlama).parameterCount
        XCTAssertLessThan(bytes, parameters * 2 + parameters / 50, "about 2 bytes per parameter")
    }
}
