import WeftModel

/// Measured costs of one rank, from which the planner predicts a step's time.
/// Calibrated at start-up (`Engine.calibrate`) and identical on every rank
/// (rank 0's measurements are broadcast), so every rank decides the same split.
public struct CostModel: Sendable, Equatable {
    /// Matrix-multiply rate of the rank's compute threads, flop/s, on many rows.
    public var gemmFlopsPerSecond: Double
    /// Rate at which a GEMM streams weights when rows are few (decode), bytes/s.
    public var weightBytesPerSecond: Double
    /// Attention rate: (query, key) pairs per second, summed over local heads.
    public var attentionPairsPerSecond: Double
    /// Fixed cost of one fused collective (synchronization), seconds.
    public var collectiveLatency: Double
    /// Per-row cost of one fused collective, seconds.
    public var collectiveSecondsPerRow: Double
    /// Whether a collective in flight actually overlaps compute: true between
    /// nodes (the NIC moves the bytes) or when cores are set aside for
    /// communication; false on one node where the same cores would do both.
    public var collectiveOverlapsCompute: Bool

    public init(gemmFlopsPerSecond: Double, weightBytesPerSecond: Double, attentionPairsPerSecond: Double,
                collectiveLatency: Double, collectiveSecondsPerRow: Double, collectiveOverlapsCompute: Bool) {
        self.gemmFlopsPerSecond = gemmFlopsPerSecond
        self.weightBytesPerSecond = weightBytesPerSecond
        self.attentionPairsPerSecond = attentionPairsPerSecond
        self.collectiveLatency = collectiveLatency
        self.collectiveSecondsPerRow = collectiveSecondsPerRow
        self.collectiveOverlapsCompute = collectiveOverlapsCompute
    }

    var encoded: [Double] {
        [gemmFlopsPerSecond, weightBytesPerSecond, attentionPairsPerSecond, collectiveLatency, collectiveSecondsPerRow,
         collectiveOverlapsCompute ? 1 : 0]
    }

    init(encoded v: [Double]) {
        self.init(gemmFlopsPerSecond: v[0], weightBytesPerSecond: v[1], attentionPairsPerSecond: v[2],
                  collectiveLatency: v[3], collectiveSecondsPerRow: v[4], collectiveOverlapsCompute: v[5] != 0)
    }
}

/// The work of one layer on one rank, from the model's local shapes.
public struct LayerShape: Sendable, Equatable {
    /// Weight floats of the attention block (qkv + o) and of the MLP (gate/up + down).
    public var attentionWeights: Int
    public var mlpWeights: Int
    public var layerCount: Int

    public init(attentionWeights: Int, mlpWeights: Int, layerCount: Int) {
        self.attentionWeights = attentionWeights
        self.mlpWeights = mlpWeights
        self.layerCount = layerCount
    }
}

/// Decides whether and where to cut a flattened batch into halves A and B.
///
/// - Both halves' row counts are multiples of `granule` where possible:
///   lcm(GEMM micro-kernel rows, TP degree), so no half leaves a ragged
///   micro-kernel tail and both reduce-scatter without padding.
/// - Cost includes causal attention (a row at position p attends to p+1
///   keys), so a cut inside a long prefill moves it toward the end.
/// - The split is taken only if the predicted time beats the unsplit fused
///   step by `minimumGain`; otherwise the batch runs unsplit (fused).
public struct TokenSplitPlanner: Sendable {
    public var costs: CostModel
    public var shape: LayerShape
    public var granule: Int
    public var minimumGain: Double = 0.03

    public init(costs: CostModel, shape: LayerShape, granule: Int) {
        self.costs = costs
        self.shape = shape
        self.granule = max(1, granule)
    }

    public enum Decision: Equatable, Sendable {
        case unsplit(predicted: Double)
        case split(at: Int, predicted: Double, unsplitPredicted: Double)
    }

    /// Time of one GEMM pass over `weights` floats for `rows` rows: the larger
    /// of the arithmetic time and the time to stream the weights once.
    func gemmTime(rows: Int, weights: Int) -> Double {
        guard rows > 0 else { return 0 }
        return max(2 * Double(rows) * Double(weights) / costs.gemmFlopsPerSecond,
                   Double(weights) * 4 / costs.weightBytesPerSecond)
    }

    func attentionTime(_ positions: ArraySlice<Int32>) -> Double {
        let pairs = positions.reduce(0.0) { $0 + Double($1) + 1 }
        return pairs / costs.attentionPairsPerSecond
    }

    func commTime(rows: Int) -> Double { rows > 0 ? costs.collectiveLatency + Double(rows) * costs.collectiveSecondsPerRow : 0 }

    /// Predicted seconds of the whole forward pass for the batch with these positions.
    public func predictUnsplit(_ positions: [Int32]) -> Double {
        let t = positions.count
        let attention = gemmTime(rows: t, weights: shape.attentionWeights) + attentionTime(positions[...])
        let mlp = gemmTime(rows: t, weights: shape.mlpWeights)
        return Double(shape.layerCount) * (attention + mlp + 2 * commTime(rows: t))
    }

    public func predictSplit(_ positions: [Int32], at a: Int) -> Double {
        let t = positions.count
        let attentionA = gemmTime(rows: a, weights: shape.attentionWeights) + attentionTime(positions[0..<a])
        let attentionB = gemmTime(rows: t - a, weights: shape.attentionWeights) + attentionTime(positions[a...])
        let mlpA = gemmTime(rows: a, weights: shape.mlpWeights), mlpB = gemmTime(rows: t - a, weights: shape.mlpWeights)
        let commA = commTime(rows: a), commB = commTime(rows: t - a)
        // The four staggered steps of a layer: compute of one half beside the
        // other half's collective (in sequence when they cannot overlap).
        func step(_ compute: Double, _ comm: Double) -> Double {
            costs.collectiveOverlapsCompute ? max(compute, comm) : compute + comm
        }
        let layer = step(attentionA, commB) + step(attentionB, commA) + step(mlpA, commB) + step(mlpB, commA)
        return Double(shape.layerCount) * layer
    }

    /// Candidate cut points: multiples of the granule, both halves non-empty.
    public func candidates(count t: Int) -> [Int] {
        guard t >= 2 else { return [] }
        let aligned = stride(from: granule, to: t, by: granule).map { $0 }
        return aligned.isEmpty ? [t / 2] : aligned
    }

    public func decide(positions: [Int32]) -> Decision {
        let unsplit = predictUnsplit(positions)
        var best: (Int, Double)?
        for a in candidates(count: positions.count) {
            let time = predictSplit(positions, at: a)
            if best == nil || time < best!.1 { best = (a, time) }
        }
        guard let (a, time) = best, time < unsplit * (1 - minimumGain) else { return .unsplit(predicted: unsplit) }
        return .split(at: a, predicted: time, unsplitPredicted: unsplit)
    }

    /// The best cut regardless of profit (for a forced `overlap` mode), or nil
    /// when the batch is too small to cut.
    public func bestSplit(positions: [Int32]) -> Int? {
        candidates(count: positions.count).min { predictSplit(positions, at: $0) < predictSplit(positions, at: $1) }
    }
}
