import WeftModel

/// How a serving engine batches and how much it admits.
public struct ServingConfiguration: Sendable {
    /// The model, its placement and communication mode.
    public var engine: EngineConfiguration
    /// Most sequences decoding together (the running batch).
    public var maxRunningSequences = 16
    /// Most tokens per step: decodes plus chunks of prompts (chunked prefill).
    public var maxBatchTokens = 256
    /// Longest sequence (prompt + generated); nil: the model's
    /// max_position_embeddings, at most 4096.
    public var maxModelLength: Int?
    /// Requests that may wait for a running slot before new ones are refused.
    public var maxQueuedRequests = 256
    /// KV cache blocks; nil: enough for `maxRunningSequences` sequences of
    /// `maxModelLength` positions.
    public var kvBlocks: Int?
    /// How many prompt tokens a step with decodes may carry besides them
    /// (`StepBudget`): by default as many as keep the predicted step within
    /// twice the decode-only step, so a prefill burst does not stall the
    /// streams already decoding; `.fixed` fills every step to `maxBatchTokens`.
    public var stepTimeTarget: StepTimeTarget = .default
    /// Automatic prefix caching: full KV blocks are kept after their request
    /// ends and reused by later requests with the same prefix; false turns it off.
    public var prefixCaching = true

    public init(engine: EngineConfiguration) {
        self.engine = engine
    }

    /// Requests running or queued before `submit` answers `overloaded`.
    var admissionLimit: Int {
        let (sum, overflow) = maxRunningSequences.addingReportingOverflow(maxQueuedRequests)
        return overflow ? Int.max : sum
    }

    /// Checks the serving limits (the engine configuration is checked by `Engine`).
    func validate() throws {
        guard maxRunningSequences > 0 else {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxRunningSequences", "must be at least 1, got \(maxRunningSequences)")
        }
        guard maxBatchTokens > 0 else {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxBatchTokens", "must be at least 1, got \(maxBatchTokens)")
        }
        guard maxQueuedRequests >= 0 else {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxQueuedRequests", "must be >= 0, got \(maxQueuedRequests)")
        }
        if let maxModelLength, maxModelLength < 2 {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxModelLength", "must be at least 2, got \(maxModelLength)")
        }
        if let kvBlocks, kvBlocks < 1 {
            throw RuntimeError.invalidParameter("ServingConfiguration.kvBlocks", "must be at least 1, got \(kvBlocks)")
        }
        try stepTimeTarget.check()
    }

    /// Sizes the engine's sequences and KV cache for these limits and the
    /// model (`Engine` calls this with the config it read, once, on every rank).
    func size(_ configuration: inout EngineConfiguration, for model: ModelConfig) throws {
        let modelMax = model.maxPositionEmbeddings
        if let maxModelLength, maxModelLength > modelMax {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxModelLength", "\(maxModelLength) exceeds the model's max_position_embeddings \(modelMax)")
        }
        // The engine sizes the cache (checked against overflow and memory).
        configuration.kvBlocks = kvBlocks
        configuration.maxSequences = maxRunningSequences
        configuration.maxSequenceLength = maxModelLength ?? min(modelMax, 4096)
    }
}
