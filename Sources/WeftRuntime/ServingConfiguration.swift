import Foundation
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

    public init(engine: EngineConfiguration) {
        self.engine = engine
    }

    /// Requests running or queued before `submit` answers `overloaded`.
    var admissionLimit: Int { maxRunningSequences + maxQueuedRequests }

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
    }

    /// The engine configuration that sizes the KV cache for these limits.
    ///
    /// The model's length is known only once its config is read, so this
    /// peeks at the config first (cheap; if it cannot be read, `Engine`
    /// reports the problem with its own message on every rank).
    func engineConfiguration() throws -> EngineConfiguration {
        let modelMax = Self.peekMaxPositions(engine.weights)
        if let requested = maxModelLength, let modelMax, requested > modelMax {
            throw RuntimeError.invalidParameter("ServingConfiguration.maxModelLength", "\(requested) exceeds the model's max_position_embeddings \(modelMax)")
        }
        var resolved = engine
        // The engine sizes the cache (checked against overflow and memory).
        resolved.kvBlocks = kvBlocks
        resolved.maxSequences = maxRunningSequences
        resolved.maxSequenceLength = min(maxModelLength ?? min(modelMax ?? 4096, 4096), modelMax ?? Int.max)
        return resolved
    }

    private static func peekMaxPositions(_ weights: EngineConfiguration.Weights) -> Int? {
        let file: URL
        switch weights {
        case .checkpoint(let directory): file = directory.appendingPathComponent("config.json")
        case .random(let shape, _): file = shape
        }
        guard let data = try? Data(contentsOf: file), let config = try? ModelConfig.parse(data, file: file.path) else {
            return nil
        }
        return config.maxPositionEmbeddings
    }
}
