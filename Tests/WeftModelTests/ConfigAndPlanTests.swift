import Foundation
import WeftModel
import WeftTensor
import XCTest

final class ConfigAndPlanTests: XCTestCase {
    func config(heads: Int, kvHeads: Int, intermediate: Int = 688, vocab: Int = 4096) -> ModelConfig {
        ModelConfig(architecture: .llama, hiddenSize: heads * 32, intermediateSize: intermediate, layerCount: 1,
                    headCount: heads, kvHeadCount: kvHeads, vocabularySize: vocab)
    }

    func testPlanCoversEveryHeadRowAndVocabularyEntryOnce() throws {
        for (heads, kv, size) in [(8, 4, 1), (8, 4, 2), (8, 4, 4), (8, 4, 8), (12, 4, 3), (12, 2, 6), (12, 12, 4), (32, 8, 16), (8, 4, 3), (9, 3, 2), (9, 3, 4), (14, 2, 4)] {
            let c = config(heads: heads, kvHeads: kv, intermediate: 1001, vocab: 4099)
            let plans = try (0..<size).map { try TensorParallelPlan(config: c, rank: $0, size: size) }
            XCTAssertEqual(plans.flatMap { Array($0.heads) }, Array(0..<heads))
            XCTAssertEqual(plans.flatMap { Array($0.intermediate) }, Array(0..<1001), "uneven intermediate split")
            XCTAssertEqual(plans.flatMap { Array($0.vocabulary) }, Array(0..<4099), "uneven vocabulary split")
            let group = heads / kv
            for plan in plans {
                // Every local head's KV head is local, and no KV head is held needlessly.
                let needed = Set(plan.heads.map { $0 / group })
                XCTAssertEqual(Set(plan.kvHeads), needed, "heads \(heads) kv \(kv) size \(size) rank \(plan.rank)")
                let mapping = plan.kvHeadOfLocalHead(config: c)
                for (i, head) in plan.heads.enumerated() {
                    XCTAssertEqual(Int(mapping[i]) + plan.kvHeads.lowerBound, head / group)
                }
            }
            if size >= kv && heads % size == 0 {
                XCTAssertTrue(plans.allSatisfy { $0.kvHeads.count == 1 }, "replicated KV heads: one per rank")
            }
            if kv % size == 0 {
                XCTAssertEqual(plans.map(\.kvHeads.count).reduce(0, +), kv, "KV heads partitioned when the degree divides them")
            }
        }
    }

    func testPlanRefusesDegreesThatDoNotFit() {
        XCTAssertThrowsError(try TensorParallelPlan(config: config(heads: 8, kvHeads: 4), rank: 0, size: 9)) { error in
            XCTAssertEqual("\(error)", "tensor-parallel degree 9 exceeds num_attention_heads 8: every rank needs at least one attention head")
        }
        XCTAssertThrowsError(try TensorParallelPlan(config: config(heads: 8, kvHeads: 4, intermediate: 4), rank: 0, size: 8)) { error in
            XCTAssertTrue("\(error)".contains("intermediate_size 4"), "\(error)")
        }
    }

    func testUnevenHeadsAreBalancedAndIntermediateSplitsOnBlocks() throws {
        // 9 heads on 4 ranks (SmolLM2-135M's shape): 3, 2, 2, 2.
        let c = config(heads: 9, kvHeads: 3, intermediate: 1536)
        let plans = try (0..<4).map { try TensorParallelPlan(config: c, rank: $0, size: 4, intermediateAlignment: 256) }
        XCTAssertEqual(plans.map(\.heads.count), [3, 2, 2, 2])
        XCTAssertEqual(plans.map(\.kvHeads), [0..<1, 1..<2, 1..<3, 2..<3])
        // 1536 = 6 blocks of 256: 2, 2, 1, 1 blocks, every start on a block.
        XCTAssertEqual(plans.map(\.intermediate), [0..<512, 512..<1024, 1024..<1280, 1280..<1536])
        // A ragged end (688 = 21.5 blocks of 32) stays on the last rank.
        let ragged = try (0..<3).map { try TensorParallelPlan(config: config(heads: 8, kvHeads: 4), rank: $0, size: 3, intermediateAlignment: 32) }
        XCTAssertEqual(ragged.map(\.intermediate), [0..<256, 256..<480, 480..<688])
        // Fewer blocks than ranks: the plain even split.
        XCTAssertEqual(TensorParallelPlan.alignedSplit(300, parts: 4, index: 1, alignment: 256), 75..<150)
    }

    func testKVGroupSplitKeepsGroupsWholeAndBalancesTheMLP() throws {
        // SmolLM2-135M: 9 heads, 3 KV heads, head_dim 64, intermediate 1536.
        let c = config(heads: 9, kvHeads: 3, intermediate: 1536)
        XCTAssertEqual(c.headDim, 32)
        let two = try (0..<2).map { try TensorParallelPlan(config: c, rank: $0, size: 2, intermediateAlignment: 32, headSplit: .kvGroups) }
        XCTAssertEqual(two.map(\.heads), [0..<6, 6..<9])
        XCTAssertEqual(two.map(\.kvHeads), [0..<2, 2..<3], "no KV head held twice")
        // Attention weights per layer (hidden-size rows): (2·6 + 2·2)·32 = 512
        // and (2·3 + 2·1)·32 = 256; the MLP (3 rows per intermediate row)
        // evens the totals: 512 + 3·i0 = 256 + 3·i1, i0 + i1 = 1536 gives
        // i0 = 725.3, on 32-blocks 736 (23 blocks) and 800.
        XCTAssertEqual(two.map(\.intermediate), [0..<736, 736..<1536])
        func load(_ p: TensorParallelPlan) -> Int { (2 * p.heads.count + 2 * p.kvHeads.count) * 32 + 3 * p.intermediate.count }
        XCTAssertLessThanOrEqual(abs(load(two[0]) - load(two[1])), 3 * 32, "totals within one block")
        // Beyond the KV head count the heads split evenly, as with .even.
        let four = try (0..<4).map { try TensorParallelPlan(config: c, rank: $0, size: 4, intermediateAlignment: 32, headSplit: .kvGroups) }
        XCTAssertEqual(four.map(\.heads.count), [3, 2, 2, 2])
        XCTAssertEqual(four.flatMap { Array($0.intermediate) }, Array(0..<1536))
        XCTAssertTrue(four.allSatisfy { $0.intermediate.lowerBound % 32 == 0 && $0.intermediate.count > 0 })
        // The default: heads even, MLP even.
        let even = try (0..<2).map { try TensorParallelPlan(config: c, rank: $0, size: 2, intermediateAlignment: 32) }
        XCTAssertEqual(even.map(\.heads), [0..<5, 5..<9])
        XCTAssertEqual(even.map(\.kvHeads), [0..<2, 1..<3])
        XCTAssertEqual(even.map(\.intermediate), [0..<768, 768..<1536])
    }

    func testBalancedSplitCoversEverythingAndGivesEveryPartABlock() {
        // A fixed load larger than the whole share: that part keeps one unit.
        let parts = (0..<3).map { TensorParallelPlan.balancedSplit(100, weightPerItem: 1, fixed: [1000, 0, 0], index: $0, alignment: 10) }
        XCTAssertEqual(parts, [0..<10, 10..<60, 60..<100])
        // Ragged end, no fixed load: an even aligned split.
        let even = (0..<4).map { TensorParallelPlan.balancedSplit(688, weightPerItem: 3, fixed: [0, 0, 0, 0], index: $0, alignment: 32) }
        XCTAssertEqual(even.flatMap { Array($0) }, Array(0..<688))
        XCTAssertTrue(even.allSatisfy { $0.lowerBound % 32 == 0 })
        // Fewer units than parts: the plain even split.
        XCTAssertEqual(TensorParallelPlan.balancedSplit(3, weightPerItem: 1, fixed: [0, 0, 0, 0], index: 3, alignment: 32), 3..<3)
    }

    func testLlama3RopeScalingMatchesTransformers() throws {
        // Llama-3.2-1B's shape: inverse frequencies from transformers'
        // _compute_llama3_parameters (first, a medium-band one, last).
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Configs/models/llama-3.2-1b.json")
        let config = try ModelConfig.parse(Data(contentsOf: url), file: url.path)
        let inv = config.ropeInverseFrequencies()
        XCTAssertEqual(inv.count, 32)
        XCTAssertEqual(inv[0], 1.0, accuracy: 1e-7)                      // high frequency: unscaled
        XCTAssertEqual(inv[31], Float(1.0 / pow(500000.0, 62.0 / 64.0) / 32.0), accuracy: 1e-12)  // low: divided by factor
        // A medium-band frequency is interpolated between the two.
        let raw = 1.0 / pow(500000.0, 2.0 * 16 / 64.0)
        let wavelen = 2 * Double.pi / raw
        XCTAssertTrue(wavelen > 8192.0 / 4 && wavelen < 8192.0, "index 16 is in the smoothing band")
        let smooth = (8192.0 / wavelen - 1) / (4 - 1)
        XCTAssertEqual(Double(inv[16]), (1 - smooth) * raw / 32 + smooth * raw, accuracy: raw * 1e-5)
    }

    func testConfigErrorsNameTheField() {
        func parse(_ json: String) -> String {
            do { _ = try ModelConfig.parse(Data(json.utf8), file: "m/config.json"); return "no error" } catch { return "\(error)" }
        }
        let base = #""architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":100"#
        XCTAssertEqual(parse("{\(base)}"), "no error")
        XCTAssertEqual(parse(#"{"architectures":["LlamaForCausalLM"]}"#), "m/config.json: field \"hidden_size\": expected a value of type integer, found missing")
        XCTAssertEqual(parse("{\(base),\"num_key_value_heads\":3}"), "m/config.json: field \"num_key_value_heads\": expected a divisor of num_attention_heads (4), found 3")
        XCTAssertEqual(parse("{\(base),\"hidden_act\":\"gelu\"}"), "m/config.json: field \"hidden_act\": expected \"silu\", found \"gelu\"")
        XCTAssertTrue(parse("{\(base),\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}").contains("rope_scaling.low_freq_factor"))
        XCTAssertTrue(parse("{\(base),\"vocab_size\":\"big\"}").contains("field \"vocab_size\": expected a value of type integer, found big"))
        XCTAssertTrue(parse("[1]").contains("expected a JSON object"))
    }

    /// A library names its own parameter (what an embedder typed), never a CLI flag.
    func testLibraryErrorsNameTheirParameterNotAFlag() {
        XCTAssertThrowsError(try ComputePool(threads: 0)) { error in
            XCTAssertEqual((error as? ParameterError)?.parameter, InvalidParameter("ComputePool(threads:)", "must be at least 1, got 0"))
            XCTAssertEqual("\(error)", "ComputePool(threads:): must be at least 1, got 0")
        }
        XCTAssertNil((TensorError.system("weft_pool_create(1)", 12) as ParameterError).parameter)
    }
}
