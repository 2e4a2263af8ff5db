import Foundation
import WeftComm
import WeftModel
import WeftTensor
import WeftTokenizer

/// What to load and how to run it on this rank.
public struct EngineConfiguration: Sendable {
    public enum Weights: Sendable {
        /// A Hugging Face model folder.
        case checkpoint(URL)
        /// Random weights of a model shape (a config.json-style file), for
        /// benchmarks without a checkpoint.
        case random(shape: URL, seed: UInt64)
    }

    public var weights: Weights
    /// Compute threads per rank; nil = one per core bound to the rank.
    public var threads: Int?
    /// KV cache: positions per block and total blocks (nil: enough for
    /// `maxSequenceLength` tokens of `maxSequences` sequences).
    public var kvBlockSize: Int = 16
    public var kvBlocks: Int?
    public var maxSequenceLength: Int?
    public var maxSequences: Int = 1

    public init(weights: Weights, threads: Int? = nil) {
        self.weights = weights
        self.threads = threads
    }
}

/// One rank's inference engine: the model shard, its KV cache and the
/// communicator. Every rank constructs it and calls the same methods in the
/// same order; results (logits, sampled tokens) are produced on rank 0.
public final class Engine {
    public let communicator: Communicator
    public let model: LlamaModel
    public let tokenizer: Tokenizer?
    public let configuration: EngineConfiguration
    public let loadSeconds: Double
    private var nextSequenceID = 0

    public var config: ModelConfig { model.config }
    public var isRoot: Bool { communicator.isRoot }

    /// Loads the model on every rank. Errors on any rank are reported on all
    /// (see `Communicator.agree`), so no rank is left waiting.
    public init(configuration: EngineConfiguration, communicator: Communicator) throws {
        self.configuration = configuration
        self.communicator = communicator
        let start = Date()
        let comm = communicator
        // Phase 1: config, tokenizer and plan (cheap; fail fast and together).
        let (modelConfig, plan, tokenizer, source): (ModelConfig, TensorParallelPlan, Tokenizer?, WeightSource) = try comm.agree {
            switch configuration.weights {
            case .checkpoint(let directory):
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw ModelError.file(directory.path, "no such model folder")
                }
                let config = try ModelConfig.load(directory: directory)
                let plan = try TensorParallelPlan(config: config, rank: comm.rank, size: comm.size)
                let tokenizer = FileManager.default.fileExists(atPath: directory.appendingPathComponent("tokenizer.json").path)
                    ? try Tokenizer(directory: directory) : nil
                let source = try CheckpointSource(directory: directory)
                return (config, plan, tokenizer, source)
            case .random(let shape, let seed):
                let data: Data
                do { data = try Data(contentsOf: shape) } catch {
                    throw ModelError.file(shape.path, "cannot read model shape")
                }
                let config = try ModelConfig.parse(data, file: shape.path)
                let plan = try TensorParallelPlan(config: config, rank: comm.rank, size: comm.size)
                return (config, plan, nil, RandomWeightSource(seed: seed))
            }
        }
        // Phase 2: the weights (each rank reads only its slices).
        let node = NumaTopology.isAvailable ? NumaTopology.currentNode : nil
        let (pool, weights) = try comm.agree { () throws -> (ComputePool, LlamaWeights) in
            let pool = try ComputePool(threads: configuration.threads)
            let weights = try LlamaWeights(config: modelConfig, plan: plan, source: source, pool: pool, node: node)
            return (pool, weights)
        }
        let length = min(configuration.maxSequenceLength ?? modelConfig.maxPositionEmbeddings, modelConfig.maxPositionEmbeddings)
        let blocks = configuration.kvBlocks
            ?? configuration.maxSequences * ((length + configuration.kvBlockSize - 1) / configuration.kvBlockSize)
        let cache = try comm.agree { () throws -> PagedKVCache in
            guard configuration.kvBlockSize > 0, blocks > 0 else {
                throw RuntimeError.invalidOption("--kv-blocks", "KV cache needs at least one block of at least one position")
            }
            return PagedKVCache(layerCount: modelConfig.layerCount, blockSize: configuration.kvBlockSize, blockCount: blocks,
                                kvWidth: plan.kvHeads.count * modelConfig.headDim, node: node)
        }
        model = LlamaModel(weights: weights, communicator: comm, pool: pool, cache: cache)
        self.tokenizer = tokenizer
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// Checks prompt tokens on every rank (they are replicated, so every rank
    /// reaches the same verdict without communicating).
    public func validate(tokens: [Int], maxNewTokens: Int = 0) throws {
        guard !tokens.isEmpty else { throw RuntimeError.invalidInput("the prompt is empty: give at least one token") }
        for token in tokens where token < 0 || token >= config.vocabularySize {
            throw RuntimeError.invalidInput("token id \(token) is out of range: the vocabulary has \(config.vocabularySize) ids (0...\(config.vocabularySize - 1))")
        }
        let limit = min(config.maxPositionEmbeddings, model.cache.blockCount * model.cache.blockSize)
        guard tokens.count + maxNewTokens <= limit else {
            throw RuntimeError.invalidInput("prompt of \(tokens.count) tokens plus \(maxNewTokens) new tokens exceeds the context of \(limit) positions")
        }
    }

    /// Logits of every position of `tokens` (one row of vocab_size each) on
    /// rank 0; [] on the others.
    public func logits(tokens: [Int]) throws -> [[Float]] {
        try validate(tokens: tokens)
        let sequence = newSequence()
        defer { model.cache.release(sequence: sequence) }
        var batch = FlatBatch()
        batch.append(sequence: sequence, tokens: tokens.map { Int32($0) }, firstPosition: 0, logits: .all)
        let local = try model.forward(batch)
        let full = try model.gatherLogits(local, rowCount: tokens.count)
        guard isRoot else { return [] }
        let v = config.vocabularySize
        return (0..<tokens.count).map { Array(full[$0 * v ..< ($0 + 1) * v]) }
    }

    /// Generates up to `maxNewTokens` tokens after `prompt`, stopping at an
    /// end-of-sequence token. `onToken` is called on rank 0 as each token is
    /// chosen. Returns the generated tokens on every rank.
    public func generate(prompt: [Int], maxNewTokens: Int, sampler: Sampler = Sampler(),
                         stopTokens: Set<Int>? = nil, onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        guard maxNewTokens >= 0 else { throw RuntimeError.invalidOption("--max-tokens", "must be >= 0, got \(maxNewTokens)") }
        try validate(tokens: prompt, maxNewTokens: maxNewTokens)
        let stops = stopTokens ?? Set(config.eosTokenIDs + (tokenizer?.eosTokenIDs ?? []))
        var sampler = sampler
        let sequence = newSequence()
        defer { model.cache.release(sequence: sequence) }
        var generated: [Int] = []
        var pending = prompt.map { Int32($0) }
        var position = 0
        while generated.count < maxNewTokens {
            var batch = FlatBatch()
            batch.append(sequence: sequence, tokens: pending, firstPosition: position, logits: .last)
            let local = try model.forward(batch)
            position += pending.count
            let full = try model.gatherLogits(local, rowCount: 1)
            var next: [Int32] = isRoot ? [Int32(sampler.sample(full[...]))] : []
            try communicator.broadcast(&next)
            let token = Int(next[0])
            generated.append(token)
            if isRoot { onToken(token) }
            if stops.contains(token) { break }
            pending = [Int32(token)]
        }
        return generated
    }

    /// Runs one flattened batch (several sequences, mixed prefill and decode)
    /// and returns full logit rows for `batch.logitRows` on rank 0.
    public func forward(_ batch: FlatBatch) throws -> [[Float]] {
        let local = try model.forward(batch)
        let rows = batch.logitRows.count
        let full = try model.gatherLogits(local, rowCount: rows)
        guard isRoot else { return [] }
        let v = config.vocabularySize
        return (0..<rows).map { Array(full[$0 * v ..< ($0 + 1) * v]) }
    }

    /// A fresh sequence id for the KV cache.
    public func newSequence() -> Int {
        defer { nextSequenceID += 1 }
        return nextSequenceID
    }

    public func release(sequence: Int) { model.cache.release(sequence: sequence) }
}
