import Foundation
import WeftSchedule

/// How many prompt tokens the next step may carry besides its decodes.
///
/// A step's decodes and prompt chunks run as one forward pass, so every
/// running stream waits for the whole pass before its next token: a 248-token
/// chunk in a step of 16 decodes made that step (and so those streams'
/// inter-token gap) eight times longer than a decode-only step. Under
/// `StepTimeTarget.adaptive(ratio:)` the chunk is sized by the split planner's
/// cost model instead: the largest prompt chunk whose predicted step (the
/// decodes plus the chunk) stays within `ratio` × the predicted decode-only
/// step. Where decodes are few and weight-bound, rows are nearly free and the
/// chunk is large; once the decode batch is compute-bound every prompt token
/// costs about what a decode token does, and the chunk shrinks.
///
/// Bounds: never above the ceiling `maxBatchTokens` − decodes (the scheduler's
/// token budget), never below `floor` (so a prefill burst keeps moving however
/// large the decode batch), and the whole ceiling when nothing decodes (no
/// stream is waiting, so the prompt goes as fast as it can).
///
/// The chunk is predicted as a fresh prompt's positions 0..<n: the scheduler
/// asks before it knows which prompts it will cut. A chunk deep into a long
/// prompt attends to more keys and costs more than predicted; on the models
/// and context lengths served here attention is a small share of a chunk's
/// GEMMs (see `Docs/Serving.md`, "Scheduling").
public struct StepBudget: Sendable {
    /// The policy (`ServingConfiguration.stepTimeTarget`).
    public let target: StepTimeTarget
    /// Most tokens per step (`ServingConfiguration.maxBatchTokens`).
    public let maxBatchTokens: Int
    /// Fewest prompt tokens a step with decodes may carry (when the ceiling allows).
    public let floor: Int
    /// The cost model predicting a step's time; nil under `.fixed`.
    public let planner: TokenSplitPlanner?
    /// Weights of the output projection on this rank. The planner predicts the
    /// decoder layers only; a decode step also streams this slice once for
    /// its logits (a quarter of a 1B model's step), the same with or without
    /// a chunk, so leaving it out would make a chunk look costlier, relative to
    /// the decode-only step, than it is.
    public let headWeights: Int

    /// Fewest prompt tokens per step under an adaptive target, before the KV
    /// block size is considered: a few GEMM micro-kernel row blocks, so a
    /// prompt of a few hundred tokens still takes tens of steps, not hundreds.
    public static let minimumFloor = 16

    /// A budget from a planner already at hand (tests, embedders with their own cost model).
    /// - Parameter floor: nil: `max(minimumFloor, kvBlockSize)`.
    /// - Parameter headWeights: weights of this rank's slice of the output
    ///   projection (vocabulary × hidden / ranks), which every step runs for
    ///   its logit rows (one per decode, one per completing prompt).
    public init(target: StepTimeTarget, maxBatchTokens: Int, kvBlockSize: Int = 16, floor: Int? = nil, planner: TokenSplitPlanner?,
                headWeights: Int = 0) {
        self.target = target
        self.headWeights = max(0, headWeights)
        self.maxBatchTokens = max(1, maxBatchTokens)
        self.floor = max(1, floor ?? max(Self.minimumFloor, kvBlockSize))
        self.planner = target == .fixed ? nil : planner
    }

    /// Built once on EVERY rank inside ServingEngine.init (after the Engine is
    /// made): with an adaptive target, the engine's split planner when its
    /// comm mode has one (auto, overlap), else one calibrated now (every rank
    /// together; well under a second on ~1B shapes, measured against the
    /// model's own weights, and rank 0's numbers are broadcast so every rank
    /// holds the same budget). The configuration is the same on every rank,
    /// so every rank takes the same path.
    public static func make(configuration: ServingConfiguration, engine: Engine) throws -> StepBudget {
        try configuration.stepTimeTarget.check()
        let planner: TokenSplitPlanner?
        switch configuration.stepTimeTarget {
        case .fixed: planner = nil
        case .adaptive: planner = try engine.planner ?? TokenSplitPlanner.calibrated(runner: engine.runner, commCores: engine.configuration.commCores)
        }
        let head = engine.model.weights.lmHead
        return StepBudget(target: configuration.stepTimeTarget, maxBatchTokens: configuration.maxBatchTokens,
                          kvBlockSize: engine.configuration.kvBlockSize, planner: planner, headWeights: head.outFeatures * head.inFeatures)
    }

    /// Prompt tokens (chunks of prefilling sequences) allowed in a step whose decodes are at these positions
    /// (one position per decoding sequence: its context length - 1). Between a floor that keeps prefill moving and
    /// `maxBatchTokens - decodePositions.count` (the ceiling); the whole ceiling when nothing decodes.
    public func promptTokens(decodePositions: [Int32]) -> Int {
        let ceiling = max(0, maxBatchTokens - decodePositions.count)
        guard case .adaptive(let ratio) = target, let planner, !decodePositions.isEmpty else { return ceiling }
        let lowest = min(floor, ceiling)
        let limit = ratio * predictedSeconds(decodePositions: decodePositions, promptTokens: 0)
        func fits(_ n: Int) -> Bool { predictedSeconds(decodePositions: decodePositions, promptTokens: n) <= limit }
        // The prediction grows with n: the largest n in lowest...ceiling that fits, or the floor.
        guard fits(lowest) else { debug(decodePositions, lowest, limit / ratio); return lowest }
        var (fitting, over) = (lowest, ceiling + 1)
        while over - fitting > 1 {
            let middle = fitting + (over - fitting) / 2
            if fits(middle) { fitting = middle } else { over = middle }
        }
        debug(decodePositions, fitting, limit / ratio)
        return fitting
    }

    /// WEFT_DEBUG_BUDGET set: one line per decision on stderr (time, decodes,
    /// chunk, predicted decode-only and whole step), to set against the steps' real times.
    static let debugging = ProcessInfo.processInfo.environment["WEFT_DEBUG_BUDGET"] != nil

    private func debug(_ decodes: [Int32], _ n: Int, _ decodeOnly: Double) {
        guard Self.debugging else { return }
        let line = "budget \(Date().timeIntervalSince1970) decodes \(decodes.count) chunk \(n) decodeOnly \(decodeOnly) step \(predictedSeconds(decodePositions: decodes, promptTokens: n))\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// The planner's predicted seconds of a step with these decodes and a fresh
    /// prompt chunk of `promptTokens` tokens (positions 0..<n), unsplit, plus
    /// the output projection for a logit row per decode and one for the chunk
    /// (as if it completed its prompt); 0 under `.fixed`.
    public func predictedSeconds(decodePositions: [Int32], promptTokens n: Int) -> Double {
        guard let planner else { return 0 }
        let chunk = max(0, n)
        let layers = planner.predictUnsplit(decodePositions + (0..<Int32(clamping: chunk)).map { $0 })
        return layers + planner.gemmTime(rows: decodePositions.count + (chunk > 0 ? 1 : 0), weights: headWeights)
    }
}

/// How long a step with decodes may grow when prompt chunks join it
/// (`ServingConfiguration.stepTimeTarget`).
public enum StepTimeTarget: Sendable, Equatable {
    /// Prompt chunks fill the step up to `maxBatchTokens` whatever it costs
    /// the decoding streams (the scheduler before step budgets).
    case fixed
    /// Prompt chunks only as long as the predicted step stays within `ratio` ×
    /// the predicted decode-only step (see `StepBudget`), at least the floor.
    /// A ratio of 2 keeps a stream's slowest inter-token gaps near twice its
    /// typical ones even when every step of a prefill burst carries a chunk.
    case adaptive(ratio: Double)

    /// The default: `.adaptive(ratio: 2)`.
    public static let `default` = StepTimeTarget.adaptive(ratio: 2)

    /// The largest ratio accepted: beyond it the ceiling decides anyway on any model served here.
    public static let maximumRatio = 1000.0

    /// Refuses a ratio below 1 (a step with decodes could never carry a prompt
    /// token past the floor), above `maximumRatio`, or not a number.
    public func check() throws {
        guard case .adaptive(let ratio) = self else { return }
        guard ratio.isFinite, ratio >= 1, ratio <= Self.maximumRatio else {
            throw RuntimeError.invalidParameter("ServingConfiguration.stepTimeTarget", "the adaptive ratio must be 1...\(Int(Self.maximumRatio)) (step time over the decode-only step), got \(ratio)")
        }
    }
}
