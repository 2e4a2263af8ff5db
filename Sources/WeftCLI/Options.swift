import ArgumentParser
import Foundation
import WeftRuntime

/// Where the weights come from and how a rank computes.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Hugging Face model folder (config.json, *.safetensors, tokenizer.json).")
    var model: String?

    @Option(name: .long, help: "Use random weights of this model shape (a config.json-style file, e.g. Configs/models/llama-3.2-1b.json) instead of a checkpoint.")
    var randomWeights: String?

    @Option(name: .long, help: "Seed of --random-weights.")
    var weightSeed: UInt64 = 1

    @Option(name: .long, help: "Compute threads per rank (default: the cores the rank is bound to).")
    var threads: Int?

    @Option(name: .long, help: "KV cache block size in positions.")
    var kvBlockSize: Int = 16

    func validate() throws {
        if model == nil && randomWeights == nil { throw ValidationError("give --model DIR or --random-weights SHAPE.json") }
        if model != nil && randomWeights != nil { throw ValidationError("give only one of --model and --random-weights") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if kvBlockSize < 1 { throw ValidationError("--kv-block-size must be at least 1, got \(kvBlockSize)") }
    }

    func engineConfiguration(maxSequenceLength: Int? = nil) -> EngineConfiguration {
        let weights: EngineConfiguration.Weights
        if let model {
            weights = .checkpoint(URL(fileURLWithPath: model))
        } else {
            weights = .random(shape: URL(fileURLWithPath: randomWeights!), seed: weightSeed)
        }
        var configuration = EngineConfiguration(weights: weights, threads: threads)
        configuration.kvBlockSize = kvBlockSize
        configuration.maxSequenceLength = maxSequenceLength
        return configuration
    }
}

/// Parses "1,2,3" into token ids.
func parseTokenList(_ text: String, option: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    return try parts.map { part in
        guard let id = Int(part.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(option): \"\(part)\" is not a token id (expected comma-separated integers like 1,2,3)")
        }
        return id
    }
}

/// JSON text of an encodable value, keys in a stable order.
func jsonString<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
