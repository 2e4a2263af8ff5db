import Foundation
import WeftModel
import WeftSchedule
import XCTest

/// Checkpoint formats and architecture variants beyond the tiny Llama:
/// Qwen2 q/k/v biases, tied embeddings, llama3 RoPE scaling, GQA 4:1, F16
/// weights in two shards with an index, and F32 weights.
final class CheckpointVariantTests: XCTestCase {
    static let variant = Fixtures.tinyLlama.deletingLastPathComponent().appendingPathComponent("tiny-qwen2-variant")

    struct Expected: Decodable {
        struct Case: Decodable { let tokens: [Int]; let logits: [[Float]] }
        let logits_cases: [Case]
    }

    func testQwen2VariantMatchesIndependentReference() throws {
        let config = try ModelConfig.load(directory: Self.variant)
        XCTAssertEqual(config.architecture, .qwen2)
        XCTAssertTrue(config.attentionBias)
        XCTAssertTrue(config.tieWordEmbeddings)
        XCTAssertNotNil(config.ropeScaling)
        let model = try Fixtures.model(source: CheckpointSource(directory: Self.variant), config: config)
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Self.variant.appendingPathComponent("expected.json")))
        for (index, reference) in expected.logits_cases.enumerated() {
            var batch = FlatBatch()
            batch.append(sequence: index, tokens: reference.tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
            let logits = try model.forward(batch)
            model.cache.release(sequence: index)
            Fixtures.assertClose(logits, reference.logits.flatMap { $0 }, "variant case \(index)")
        }
    }

    /// The same weights stored as F32 give bit-identical logits to BF16 widened
    /// at load (the conversion is exact), here also through a sharded index.
    func testF32ShardedCheckpointEqualsBF16() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("weft-f32-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.copyItem(at: Fixtures.tinyLlama.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))
        let entries = try SafetensorsWriter.read(Fixtures.tinyLlama.appendingPathComponent("model.safetensors").path)
        let converted = entries.map { entry -> SafetensorsWriter.Entry in
            XCTAssertEqual(entry.dtype, "BF16")
            var floats = Data(capacity: entry.bytes.count * 2)
            entry.bytes.withUnsafeBytes { raw in
                for i in 0..<entry.bytes.count / 2 {
                    var bits = UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                    withUnsafeBytes(of: &bits) { floats.append(contentsOf: $0) }
                }
            }
            return SafetensorsWriter.Entry(name: entry.name, dtype: "F32", shape: entry.shape, bytes: floats)
        }
        let half = converted.count / 2
        try SafetensorsWriter.write(Array(converted[..<half]), to: folder.appendingPathComponent("a.safetensors"))
        try SafetensorsWriter.write(Array(converted[half...]), to: folder.appendingPathComponent("b.safetensors"))
        var map: [String: String] = [:]
        for (i, e) in converted.enumerated() { map[e.name] = i < half ? "a.safetensors" : "b.safetensors" }
        try JSONSerialization.data(withJSONObject: ["weight_map": map]).write(to: folder.appendingPathComponent("model.safetensors.index.json"))

        let tokens = Fixtures.reference.logits_cases[1].tokens.map { Int32($0) }
        func logits(_ model: TestDecoder) throws -> [Float] {
            var batch = FlatBatch()
            batch.append(sequence: 0, tokens: tokens, firstPosition: 0, logits: .all)
            defer { model.cache.release(sequence: 0) }
            return try model.forward(batch)
        }
        let f32 = try logits(Fixtures.model(source: CheckpointSource(directory: folder)))
        // Widened to float32 at load, the bf16 checkpoint is the same model bit for bit.
        XCTAssertEqual(f32, try logits(Fixtures.model(format: .f32)))
        // Kept bf16 (the default), only the summation order differs.
        Fixtures.assertClose(try logits(Fixtures.model()), f32, relative: 1e-5, "bf16 kept 16-bit")
    }
}
