import Foundation
import WeftModel
import XCTest

/// The architecture's tensor table against the fixture checkpoints: every
/// tensor they hold is named by exactly one entry, the table asks for exactly
/// the tensors they hold, and Hugging Face and GGUF names map both ways.
final class TensorTableTests: XCTestCase {
    static let fixtures = Fixtures.tinyLlama.deletingLastPathComponent()

    func testEveryCheckpointTensorIsNamedByExactlyOneEntry() throws {
        for folder in ["tiny-llama", "tiny-qwen2-variant"] {
            let directory = Self.fixtures.appendingPathComponent(folder)
            let config = try ModelConfig.load(directory: directory)
            let source = try CheckpointSource(directory: directory)
            let table = config.tensorTable
            for name in source.tensorNames {
                XCTAssertEqual(table.entries(huggingFace: name).count, 1, "\(folder): \(name)")
            }
            XCTAssertEqual(table.tensors(config).map(\.name).sorted(), source.tensorNames, folder)
        }
    }

    func testEveryGGUFTensorIsNamedByExactlyOneEntryAndRoundTrips() throws {
        let folder = Self.fixtures.appendingPathComponent("gguf-model")
        for kind in ["f32", "f16", "q8_0", "q4_k"] {
            let source = try GGUFSource(path: folder.appendingPathComponent("tiny-llama-\(kind).gguf").path)
            let table = source.config.tensorTable
            var names: [String] = []
            // rope_freqs.weight is configuration (Llama 3's RoPE factors), not a weight.
            for info in source.file.tensors where info.name != "rope_freqs.weight" {
                XCTAssertEqual(table.entries(gguf: info.name).count, 1, "\(kind): \(info.name)")
                let hf = try XCTUnwrap(table.huggingFaceName(gguf: info.name), info.name)
                XCTAssertEqual(table.ggufName(hf), info.name)
                names.append(hf)
            }
            XCTAssertEqual(table.tensors(source.config).map(\.name).sorted(), names.sorted(), kind)
        }
    }

    func testNamesAreDistinctAndRoundTripForEveryVariant() {
        for architecture in [ModelConfig.Architecture.llama, .mistral, .qwen2] {
            for (bias, tied) in [(false, false), (true, true)] {
                let config = ModelConfig(architecture: architecture, hiddenSize: 64, intermediateSize: 96, layerCount: 12,
                                         headCount: 4, kvHeadCount: 2, vocabularySize: 100,
                                         tieWordEmbeddings: tied, attentionBias: bias)
                let table = config.tensorTable
                let tensors = table.tensors(config)
                let gguf = tensors.map { $0.entry.ggufName(layer: $0.layer) }
                XCTAssertEqual(Set(tensors.map(\.name)).count, tensors.count)
                XCTAssertEqual(Set(gguf).count, tensors.count)
                XCTAssertEqual(tensors.count, 3 - (tied ? 1 : 0) + 12 * (bias ? 12 : 9))
                for (t, g) in zip(tensors, gguf) {
                    XCTAssertEqual(table.ggufName(t.name), g)
                    XCTAssertEqual(table.huggingFaceName(gguf: g), t.name)
                    XCTAssertEqual(table.entries(huggingFace: t.name).map(\.layer), [t.layer])
                }
                // Layer 1 must not match layer 11's names, nor a name with extra text.
                XCTAssertNil(table.ggufName("model.layers.1x.mlp.up_proj.weight"))
                XCTAssertNil(table.huggingFaceName(gguf: "blk.01.ffn_up.weight"))
            }
        }
    }

    /// The mixture-of-experts tables: Hugging Face names distinct (one per
    /// expert), every non-expert tensor round-trips, every expert's tensor maps
    /// to its layer's stacked GGUF tensor and back to its layer and expert.
    func testMixtureOfExpertsNamesRoundTrip() {
        let moe = ModelConfig.MixtureOfExperts(expertCount: 12, expertsPerToken: 2, expertIntermediateSize: 32, normalizeTopK: true,
                                               sharedExpertIntermediateSize: 48, sparseStep: 1, denseLayers: [10])
        for architecture in [ModelConfig.Architecture.mixtral, .qwen2Moe, .qwen3Moe] {
            var sparse = moe
            if architecture == .mixtral { sparse.denseLayers = [] }
            let config = ModelConfig(architecture: architecture, hiddenSize: 64, intermediateSize: 96, layerCount: 12,
                                     headCount: 4, kvHeadCount: 2, vocabularySize: 100, moe: sparse)
            let table = config.tensorTable
            let tensors = table.tensors(config)
            XCTAssertEqual(Set(tensors.map(\.name)).count, tensors.count, "\(architecture)")
            let experts = tensors.filter { $0.expert != nil }
            let sparseLayers = architecture == .mixtral ? 12 : 11
            XCTAssertEqual(experts.count, sparseLayers * 12 * 3, "\(architecture)")
            for t in tensors {
                let g = table.ggufName(t.name)!
                if let expert = t.expert {
                    XCTAssertTrue(g.hasSuffix("_exps.weight"), g)
                    let match = table.entries.compactMap { $0.matchExpert(huggingFace: t.name) }
                    XCTAssertEqual(match.count, 1, t.name)
                    XCTAssertEqual(match.first?.layer, t.layer)
                    XCTAssertEqual(match.first?.expert, expert)
                } else {
                    XCTAssertEqual(table.huggingFaceName(gguf: g), t.name)
                }
            }
            // A dense layer of Qwen's has the dense MLP and no router.
            if architecture != .mixtral {
                XCTAssertTrue(tensors.contains { $0.name == "model.layers.10.mlp.gate_proj.weight" })
                XCTAssertFalse(tensors.contains { $0.name == "model.layers.10.mlp.gate.weight" })
            }
            XCTAssertEqual(tensors.contains { $0.name.contains("shared_expert") }, architecture == .qwen2Moe)
            XCTAssertEqual(tensors.contains { $0.name.hasSuffix("q_norm.weight") }, architecture == .qwen3Moe)
            XCTAssertNil(table.entries.first { $0.matchExpert(huggingFace: "model.layers.1.mlp.experts.01.up_proj.weight") != nil })
        }
    }

    /// The GGUF row permutation is declared for q/k (and their biases) of
    /// llama only, with the head counts that reorder them.
    func testPermutationIsDeclaredForQueryAndKeyOfLlama() {
        let llama = ModelConfig(architecture: .llama, hiddenSize: 64, intermediateSize: 96, layerCount: 1,
                                headCount: 4, kvHeadCount: 2, vocabularySize: 100, attentionBias: true)
        var qwen = llama
        qwen.architecture = .qwen2
        let permuted = llama.tensorTable.tensors(llama).compactMap { t in t.entry.ggufPermutedHeads(llama).map { (t.name, $0) } }
        XCTAssertEqual(permuted.map { $0.0 }, ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                           "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.k_proj.bias"])
        XCTAssertEqual(permuted.map { $0.1 }, [4, 2, 4, 2])
        XCTAssertTrue(qwen.tensorTable.entries.allSatisfy { $0.ggufPermutedHeads(qwen) == nil })
    }
}
