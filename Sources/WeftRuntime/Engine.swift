import CKernels
import Foundation
import WeftComm
import WeftModel
import WeftSchedule
import WeftTensor
import WeftTokenizer

/// What to load and how to run it on this rank.
public struct EngineConfiguration: Sendable {
    public enum Weights: Sendable {
        /// A Hugging Face model folder, or a GGUF file.
        case checkpoint(URL)
        /// Random weights of a model shape (a config.json-style file), for
        /// benchmarks without a checkpoint.
        case random(shape: URL, seed: UInt64)
    }

    public var weights: Weights
    /// The format of the linear weights: nil keeps each tensor's stored
    /// format (16-bit checkpoints stay 16-bit, GGUF blocks are used as
    /// stored); a format quantizes or widens every linear weight at load.
    public var weightFormat: WeightFormat?
    /// A folder with tokenizer.json, used instead of the model's own; nil: the
    /// model folder's tokenizer.json, or a GGUF file's tokenizer metadata.
    public var tokenizerDirectory: URL?
    /// Compute threads per rank; nil = one per core bound to the rank.
    public var threads: Int?
    /// KV cache: positions per block and total blocks (nil: enough for
    /// `maxSequenceLength` tokens of `maxSequences` sequences).
    public var kvBlockSize: Int = 16
    public var kvBlocks: Int?
    /// How the KV cache stores keys and values (attention computes in float32
    /// either way); 16 bits halve the cache's memory and attention's reads. f16
    /// (the default) stays within 5e-4 of the largest logit on the fixtures.
    public var kvDType: KVDType = .f16
    /// How query heads are shared out when the tensor-parallel degree does
    /// not divide them (see `TensorParallelPlan.HeadSplit`).
    public var headSplit: TensorParallelPlan.HeadSplit = .even
    /// Where a mixture-of-experts model's routed experts live: a slice of
    /// every expert on every rank (`.tensorParallel`) or whole experts, an
    /// even share on each rank (`.expertParallel`). Ignored for dense models.
    public var moePlacement: TensorParallelPlan.MoEPlacement = .tensorParallel
    public var maxSequenceLength: Int?
    public var maxSequences: Int = 1
    /// How each layer's two reductions run; `.auto` lets the cost model choose per batch.
    public var commMode: CommMode = .auto
    /// Transport of the fused collective; nil: shared memory when every rank
    /// is on one node, MPI otherwise.
    public var commTransport: CommTransport?
    /// Number format of the fused collective's transfers between nodes
    /// (partials summed in float32 on arrival; shared memory moves float32);
    /// nil: bf16 when the ranks span several machines, f32 on one.
    public var wireFormat: WireFormat?
    /// Cores of the rank set aside for the comm thread (0: the comm thread
    /// shares the compute cores and sleeps while idle).
    public var commCores: Int = 0
    /// Seconds a rank waits for a peer (in a collective, for the next step
    /// plan, or for the others at start-up) before asking whether the peer is
    /// alive; a peer that does not answer or has stopped advancing fails the job.
    public var commTimeout: Double = 120
    /// Forces overlap mode's cuts at these rows (one cut: two halves; refused
    /// for batches too small).
    public var forcedCuts: [Int]?
    /// Treat consecutive groups of this many ranks as nodes (testing the
    /// inter-node and hierarchical paths on one machine); nil asks MPI.
    public var ranksPerNode: Int?

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
    /// Runs every forward pass of `model` under the schedule its batch resolves to.
    public let runner: DecoderRunner
    public let tokenizer: Tokenizer?
    public let configuration: EngineConfiguration
    public let loadSeconds: Double
    private var nextSequenceID = 0

    public var config: ModelConfig { model.config }
    public var isRoot: Bool { communicator.isRoot }

    /// Loads the model on every rank. Errors on any rank are reported on all
    /// (see `Communicator.agree`), so no rank is left waiting.
    ///
    /// - Parameter resolve: settles what depends on the model's config before
    ///   anything is sized by it (e.g. a sequence length bounded by
    ///   `max_position_embeddings`), so the caller never reads the model's
    ///   files itself: the config is read once, here, and handed over. Runs
    ///   once on every rank; what it throws is agreed like any load error.
    public init(configuration: EngineConfiguration, communicator: Communicator,
                resolve: (ModelConfig, inout EngineConfiguration) throws -> Void = { _, _ in }) throws {
        var configuration = configuration
        self.communicator = communicator
        let start = Date()
        let comm = communicator
        comm.peerTimeout = configuration.commTimeout
        // Phase 1: config, tokenizer and plan (cheap; fail fast and together).
        /// This rank's share: MLP rows split on the down projection's blocks.
        func plan(_ config: ModelConfig, _ source: WeightSource) throws -> TensorParallelPlan {
            let alignment = LlamaWeights.intermediateAlignment(config: config, source: source, format: configuration.weightFormat)
            return try TensorParallelPlan(config: config, rank: comm.rank, size: comm.size,
                                          intermediateAlignment: alignment, headSplit: configuration.headSplit,
                                          moePlacement: configuration.moePlacement)
        }
        let (modelConfig, plan, tokenizer, source): (ModelConfig, TensorParallelPlan, Tokenizer?, WeightSource) = try comm.agree {
            let (config, source) = try Engine.open(configuration.weights)
            try resolve(config, &configuration)
            let plan = try plan(config, source)
            return (config, plan, try Engine.tokenizer(configuration, source: source), source)
        }
        self.configuration = configuration
        // Phase 2: the weights (each rank reads only its slices).
        let node = NumaTopology.isAvailable ? NumaTopology.currentNode : nil
        let (pool, weights) = try comm.agree { () throws -> (ComputePool, LlamaWeights) in
            let available = ComputePool.affinityCPUs()   // before the pool pins this thread
            let cores = available.count
            guard configuration.commCores >= 0, configuration.commCores == 0 || configuration.commCores < cores else {
                throw RuntimeError.invalidParameter("EngineConfiguration.commCores", "\(configuration.commCores) leaves no compute core: this rank is bound to \(cores) core(s)")
            }
            if let threads = configuration.threads, threads < 1 {
                throw RuntimeError.invalidParameter("EngineConfiguration.threads", "must be at least 1 (or nil: one per core), got \(threads)")
            }
            let threads = configuration.threads ?? max(1, cores - configuration.commCores)
            let pool = try ComputePool(threads: threads)
            // The comm thread takes the first core the compute threads left free.
            let free = available.filter { !pool.cpus.contains($0) }
            if configuration.commCores > 0, let core = free.first { comm.pinCommThread(to: core) }
            let weights = try LlamaWeights(config: modelConfig, plan: plan, source: source, pool: pool, node: node,
                                           format: configuration.weightFormat)
            if comm.isRoot {
                for line in weights.conversions { FileHandle.standardError.write(Data("weft: note: \(line)\n".utf8)) }
            }
            return (pool, weights)
        }
        let length = min(configuration.maxSequenceLength ?? modelConfig.maxPositionEmbeddings, modelConfig.maxPositionEmbeddings)
        let cache = try comm.agree { () throws -> PagedKVCache in
            let blocks = try Engine.kvBlocks(configuration: configuration, length: length, layers: modelConfig.layerCount,
                                             kvWidth: plan.kvHeads.count * modelConfig.headDim)
            return PagedKVCache(layerCount: modelConfig.layerCount, blockSize: configuration.kvBlockSize, blockCount: blocks,
                                kvWidth: plan.kvHeads.count * modelConfig.headDim, node: node, dtype: configuration.kvDType)
        }
        let collective = try comm.agree { () throws -> FusedResidualNorm? in
            guard configuration.commMode != .baseline else { return nil }
            return try FusedResidualNorm(communicator: comm, hidden: modelConfig.hiddenSize,
                                         transport: configuration.commTransport, timeout: configuration.commTimeout,
                                         ranksPerNode: configuration.ranksPerNode, wire: configuration.wireFormat)
        }
        model = LlamaModel(weights: weights, communicator: comm, pool: pool, cache: cache)
        runner = DecoderRunner(layers: model, communicator: comm, collective: collective)
        self.tokenizer = tokenizer
        if configuration.commMode == .auto || configuration.commMode == .overlap {
            planner = try TokenSplitPlanner.calibrated(runner: runner, commCores: configuration.commCores)
        }
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// The model's config and weight source: config.json (or a GGUF file's
    /// metadata, or a random-weight shape) read once.
    static func open(_ weights: EngineConfiguration.Weights) throws -> (ModelConfig, WeightSource) {
        switch weights {
        case .checkpoint(let location):
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: location.path, isDirectory: &isDirectory) else {
                throw ModelError.file(location.path, "no such model folder or GGUF file")
            }
            if !isDirectory.boolValue {
                let source = try GGUFSource(path: location.path)
                return (source.config, source)
            }
            return (try ModelConfig.load(directory: location), try CheckpointSource(directory: location))
        case .random(let shape, let seed):
            let data: Data
            do { data = try Data(contentsOf: shape) } catch {
                throw ModelError.file(shape.path, "cannot read model shape")
            }
            return (try ModelConfig.parse(data, file: shape.path), RandomWeightSource(seed: seed))
        }
    }

    /// The tokenizer: the configured folder's, else the model folder's or the GGUF file's.
    static func tokenizer(_ configuration: EngineConfiguration, source: WeightSource) throws -> Tokenizer? {
        switch configuration.weights {
        case .checkpoint(let location):
            if let gguf = source as? GGUFSource {
                return try Tokenizer.of(model: location, gguf: gguf.file, override: configuration.tokenizerDirectory)
            }
            return try Tokenizer.of(model: location, override: configuration.tokenizerDirectory)
        case .random:
            return try configuration.tokenizerDirectory.flatMap { try Tokenizer(directory: $0) }
        }
    }

    /// The split planner (nil unless the mode is auto or overlap).
    public private(set) var planner: TokenSplitPlanner?
    private var notedFallback = false

    /// Rows per GEMM micro-kernel block (the planner aligns halves to it).
    public static var gemmRowBlock: Int { Int(weft_gemm_row_block()) }

    /// The KV cache's block count: as configured, or enough for
    /// `maxSequences` sequences of `length` positions; refused (before any
    /// arithmetic can overflow or an allocation fail) when the cache would
    /// not fit this machine's memory.
    static func kvBlocks(configuration: EngineConfiguration, length: Int, layers: Int, kvWidth: Int) throws -> Int {
        let blockSize = configuration.kvBlockSize
        guard blockSize > 0, blockSize <= 1 << 16 else {
            throw RuntimeError.invalidParameter("EngineConfiguration.kvBlockSize", "must be 1...65536 positions, got \(blockSize)")
        }
        let blocks: Int
        if let configured = configuration.kvBlocks {
            blocks = configured
        } else {
            let (product, overflow) = configuration.maxSequences.multipliedReportingOverflow(by: PagedKVCache.blocksNeeded(forLength: length, blockSize: blockSize))
            blocks = overflow || configuration.maxSequences < 1 ? -1 : product
        }
        guard blocks > 0, blocks <= Int(Int32.max) else {
            throw RuntimeError.invalidParameter("EngineConfiguration.kvBlocks", "the KV cache needs 1...\(Int32.max) blocks, got \(blocks < 0 ? "more" : String(blocks))")
        }
        // keys and values × layers × positions × width × bytes per element
        var bytes = 2 * configuration.kvDType.byteSize
        for factor in [layers, blocks, blockSize, kvWidth] {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: factor)
            bytes = overflow ? Int.max : product
        }
        let memory = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        guard bytes <= memory else {
            throw RuntimeError.invalidParameter("EngineConfiguration.kvBlocks", "a KV cache of \(blocks) blocks of \(blockSize) positions needs \(bytes == Int.max ? "more than 2^63" : String(bytes >> 20) + " MiB") of memory; this machine has \(memory >> 20) MiB")
        }
        return blocks
    }

    /// The schedule a batch runs with, the same on every rank (the planner is
    /// rank 0's): the configured mode resolved by the planner, or overlap at
    /// `forcedCuts`; fused (noted once) when overlap cannot cut the batch.
    public func schedule(for batch: FlatBatch) throws -> Schedule {
        if configuration.commMode == .overlap, let forced = configuration.forcedCuts {
            guard let cuts = try? Schedule.Cuts(forced, rows: batch.count) else {
                throw RuntimeError.invalidParameter("EngineConfiguration.forcedCuts", "cannot cut a batch of \(batch.count) tokens at row \(forced.last ?? 0): every chunk needs at least one token")
            }
            return .overlap(cuts)
        }
        guard let schedule = configuration.commMode.schedule(for: batch.positions, planner: planner) else {
            noteFallback("a batch of \(batch.count) tokens cannot be split; it runs fused")
            return .fused
        }
        return schedule
    }

    private func noteFallback(_ message: String) {
        guard !notedFallback else { return }
        notedFallback = true
        if isRoot { FileHandle.standardError.write(Data("note: \(message) (noted once)\n".utf8)) }
    }

    /// Runs a batch through the model with the configured communication mode
    /// and returns this rank's vocabulary slice of the requested logits.
    public func forwardLocal(_ batch: FlatBatch) throws -> [Float] {
        let schedule = try self.schedule(for: batch)
        if ProcessInfo.processInfo.environment["WEFT_DEBUG_PLAN"] != nil {
            FileHandle.standardError.write(Data("plan rank \(communicator.rank): \(batch.count) rows \(schedule) costs \(planner.map { "\($0.costs)" } ?? "-")\n".utf8))
        }
        return try runner.forward(batch, schedule: schedule)
    }

    /// Positions one sequence may fill: the model's and the KV cache's.
    public var contextLength: Int { min(config.maxPositionEmbeddings, model.cache.blockCount * model.cache.blockSize) }

    /// Checks prompt tokens on every rank (they are replicated, so every rank
    /// reaches the same verdict without communicating).
    public func validate(tokens: [Int], maxNewTokens: Int = 0) throws {
        guard !tokens.isEmpty else { throw RuntimeError.invalidInput("the prompt is empty: give at least one token") }
        if let problem = config.vocabularyProblem(tokens) { throw RuntimeError.invalidInput(problem) }
        let limit = contextLength
        // Compared without adding: maxNewTokens comes from the caller
        // and may be near Int.max.
        guard maxNewTokens >= 0, tokens.count <= limit, maxNewTokens <= limit - tokens.count else {
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
        return try forward(batch)
    }

    /// Generates up to `maxNewTokens` tokens after `prompt`, stopping at an
    /// end-of-sequence token. `onToken` is called on rank 0 as each token is
    /// chosen. Returns the generated tokens on every rank.
    public func generate(prompt: [Int], maxNewTokens: Int, sampler: Sampler = Sampler(),
                         stopTokens: Set<Int>? = nil, onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        guard maxNewTokens >= 0 else { throw RuntimeError.invalidParameter("Engine.generate(maxNewTokens:)", "must be >= 0, got \(maxNewTokens)") }
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
            let local = try forwardLocal(batch)
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
        let local = try forwardLocal(batch)
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

    /// Frees what needs MPI (the collective's shared window) now, on every
    /// rank together, rather than whenever the last reference goes away.
    public func close() { runner.collective?.close() }
}

extension Tokenizer {
    /// The tokenizer of the model at `location`: the folder `override` (with a
    /// tokenizer.json) when given; else a model folder's tokenizer.json, or a
    /// GGUF file's tokenizer metadata (`tokenizer.ggml.*`); nil when the model
    /// carries none.
    ///
    /// - Parameter gguf: the GGUF file at `location` when the caller has it
    ///   open already.
    public static func of(model location: URL, gguf: GGUFFile? = nil, override: URL? = nil) throws -> Tokenizer? {
        if let override { return try Tokenizer(directory: override) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: location.path, isDirectory: &isDirectory) else {
            throw ModelError.file(location.path, "no such model folder or GGUF file")
        }
        if isDirectory.boolValue {
            return FileManager.default.fileExists(atPath: location.appendingPathComponent("tokenizer.json").path)
                ? try Tokenizer(directory: location) : nil
        }
        let file = try gguf ?? GGUFFile(path: location.path)
        return try file.header.string("tokenizer.ggml.model") != nil ? Tokenizer(gguf: file) : nil
    }
}
