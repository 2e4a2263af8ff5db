import Foundation
import WeftModel

/// Measured costs of one rank, from which the planner predicts a step's time.
/// Calibrated at start-up (`TokenSplitPlanner.calibrated(runner:commCores:)`)
/// and identical on every rank (rank 0's measurements are broadcast), so
/// every rank decides the same split.
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
    /// Seconds per weight element of an expert's GEMM at each of
    /// `ComputeRates.expertRows` rows, measured (`ComputeRates.expertSecondsPerWeight`);
    /// nil: experts cost the roofline of the two rates above.
    public var expertSecondsPerWeight: [Double]?

    public init(gemmFlopsPerSecond: Double, weightBytesPerSecond: Double, attentionPairsPerSecond: Double,
                collectiveLatency: Double, collectiveSecondsPerRow: Double, collectiveOverlapsCompute: Bool,
                expertSecondsPerWeight: [Double]? = nil) {
        self.gemmFlopsPerSecond = gemmFlopsPerSecond
        self.weightBytesPerSecond = weightBytesPerSecond
        self.attentionPairsPerSecond = attentionPairsPerSecond
        self.collectiveLatency = collectiveLatency
        self.collectiveSecondsPerRow = collectiveSecondsPerRow
        self.collectiveOverlapsCompute = collectiveOverlapsCompute
        self.expertSecondsPerWeight = expertSecondsPerWeight
    }

    /// The numbers, then a presence flag and the expert curve (zeros when
    /// absent): one length for every model.
    var encoded: [Double] {
        let curve = expertSecondsPerWeight.map { $0.count == ComputeRates.expertRows.count ? $0 : nil } ?? nil
        return [gemmFlopsPerSecond, weightBytesPerSecond, attentionPairsPerSecond, collectiveLatency, collectiveSecondsPerRow,
                collectiveOverlapsCompute ? 1 : 0, curve == nil ? 0 : 1] + (curve ?? [Double](repeating: 0, count: ComputeRates.expertRows.count))
    }

    init(encoded v: [Double]) {
        self.init(gemmFlopsPerSecond: v[0], weightBytesPerSecond: v[1], attentionPairsPerSecond: v[2],
                  collectiveLatency: v[3], collectiveSecondsPerRow: v[4], collectiveOverlapsCompute: v[5] != 0,
                  expertSecondsPerWeight: v[6] != 0 ? Array(v[7...]) : nil)
    }
}

/// The work of one layer on one rank, from the model's local shapes.
public struct LayerShape: Sendable, Equatable {
    /// Weight floats of the attention block (qkv + o) and of a dense layer's MLP (gate/up + down).
    public var attentionWeights: Int
    public var mlpWeights: Int
    public var layerCount: Int
    /// The sparse layers' experts (`experts.layers` of the `layerCount`
    /// layers have them instead of the dense MLP); nil for a dense model.
    public var experts: ExpertLayerShape?

    public init(attentionWeights: Int, mlpWeights: Int, layerCount: Int, experts: ExpertLayerShape? = nil) {
        self.attentionWeights = attentionWeights
        self.mlpWeights = mlpWeights
        self.layerCount = layerCount
        self.experts = experts
    }

    /// Whether layer `layer` is sparse: the `experts.layers` sparse layers
    /// spread evenly over the stack (the planner's order only; a model's own
    /// pattern changes little in the played-out stagger).
    public func isSparse(layer: Int) -> Bool {
        guard let experts, experts.layers > 0 else { return false }
        let n = min(experts.layers, layerCount)
        return (layer + 1) * n / layerCount > layer * n / layerCount
    }
}

/// Decides whether and where to cut a flattened batch into chunks (two
/// halves A and B, as in TokenWeave, or up to `maxChunks`).
///
/// - Chunks' row counts are multiples of `granule` where possible:
///   lcm(GEMM micro-kernel rows, TP degree), so no chunk leaves a ragged
///   micro-kernel tail and each reduce-scatters without padding.
/// - Cost includes causal attention (a row at position p attends to p+1
///   keys), so a cut inside a long prefill moves it toward the end.
/// - A step is predicted by playing the stagger out: compute steps one after
///   another on the compute thread, reductions one after another on the link,
///   each compute step waiting for its chunk's previous reduction. With two
///   halves, the reduction after one half's attention has only the other
///   half's attention (the short step) to hide behind; with three or four
///   chunks it has the rest of the attention phase.
/// - A sparse (mixture-of-experts) layer's MLP is one GEMM per expert over
///   the tokens routed to it: of a chunk's n rows, about n·k/E reach each of
///   E experts (k per token), each expert's GEMM costs its own roofline, and
///   an expert no token reached costs nothing. Cutting a batch therefore
///   costs more than the halves' share once experts are weight-bound (few
///   tokens per expert): every half re-reads every expert it reaches.
/// - The split is taken only if the predicted time beats the unsplit fused
///   step by `minimumGain`; otherwise the batch runs unsplit (fused).
public struct TokenSplitPlanner: Sendable {
    public var costs: CostModel
    public var shape: LayerShape
    public var granule: Int
    public var minimumGain: Double = 0.03
    /// Most chunks a batch is cut into.
    public var maxChunks = 4

    public init(costs: CostModel, shape: LayerShape, granule: Int) {
        self.costs = costs
        self.shape = shape
        self.granule = max(1, granule)
    }

    public enum Decision: Equatable, Sendable {
        case unsplit(predicted: Double)
        /// `cuts`: the first rows of chunks 2…K.
        case split(cuts: [Int], predicted: Double, unsplitPredicted: Double)
    }

    /// Time of one GEMM pass over `weights` floats for `rows` rows: the larger
    /// of the arithmetic time and the time to stream the weights once.
    public func gemmTime(rows: Int, weights: Int) -> Double {
        guard rows > 0 else { return 0 }
        return max(2 * Double(rows) * Double(weights) / costs.gemmFlopsPerSecond,
                   Double(weights) * 4 / costs.weightBytesPerSecond)
    }

    /// Time of a sparse layer's MLP for a chunk of `rows` rows. With routing
    /// taken as uniform, a given expert is reached by at least one of the n
    /// rows with probability p = 1 − (1 − k/E)^n, and then gets n·k/(E·p)
    /// rows on average (n·k/E over all experts); each of the `held` experts
    /// costs p times its GEMM at that many rows: the measured curve
    /// (`CostModel.expertSecondsPerWeight`, linear between its row counts,
    /// beyond the last in proportion to the rows), else the roofline
    /// (arithmetic or streaming its weights once, whichever is longer). The
    /// router and shared expert see every row.
    public func expertTime(rows: Int, experts x: ExpertLayerShape) -> Double {
        guard rows > 0, x.count > 0 else { return 0 }
        let n = Double(rows), e = Double(x.count), k = Double(min(x.perToken, x.count))
        let reached = 1 - pow(1 - k / e, n)
        let rowsPerExpert = n * k / (e * reached)
        let weights = Double(x.weightsPerExpert)
        let perExpert: Double
        if let curve = costs.expertSecondsPerWeight, curve.count == ComputeRates.expertRows.count {
            perExpert = weights * Self.interpolate(curve, at: rowsPerExpert)
        } else {
            perExpert = max(2 * rowsPerExpert * weights / costs.gemmFlopsPerSecond, weights * 4 / costs.weightBytesPerSecond)
        }
        return Double(x.held) * reached * perExpert + gemmTime(rows: rows, weights: x.sharedWeights)
    }

    /// The expert curve at `rows` rows: linear between `ComputeRates.expertRows`,
    /// the first value below the first, proportional to the rows beyond the last.
    static func interpolate(_ curve: [Double], at rows: Double) -> Double {
        let points = ComputeRates.expertRows
        guard rows > Double(points[0]) else { return curve[0] }
        for i in 1..<points.count where rows <= Double(points[i]) {
            let lo = Double(points[i - 1]), hi = Double(points[i])
            return curve[i - 1] + (curve[i] - curve[i - 1]) * (rows - lo) / (hi - lo)
        }
        return curve[points.count - 1] * rows / Double(points[points.count - 1])
    }

    /// Time of layer `layer`'s MLP for `rows` rows: dense, or its experts.
    func mlpTime(rows: Int, layer: Int) -> Double {
        if let experts = shape.experts, shape.isSparse(layer: layer) { return expertTime(rows: rows, experts: experts) }
        return gemmTime(rows: rows, weights: shape.mlpWeights)
    }

    func attentionTime(_ positions: ArraySlice<Int32>) -> Double {
        let pairs = positions.reduce(0.0) { $0 + Double($1) + 1 }
        return pairs / costs.attentionPairsPerSecond
    }

    public func commTime(rows: Int) -> Double { rows > 0 ? costs.collectiveLatency + Double(rows) * costs.collectiveSecondsPerRow : 0 }

    /// Predicted seconds of the whole forward pass for the batch with these positions.
    public func predictUnsplit(_ positions: [Int32]) -> Double {
        let t = positions.count
        let attention = gemmTime(rows: t, weights: shape.attentionWeights) + attentionTime(positions[...])
        guard shape.experts != nil else {
            let mlp = gemmTime(rows: t, weights: shape.mlpWeights)
            return Double(shape.layerCount) * (attention + mlp + 2 * commTime(rows: t))
        }
        return (0..<shape.layerCount).reduce(0.0) { $0 + attention + mlpTime(rows: t, layer: $1) + 2 * commTime(rows: t) }
    }

    public func predictSplit(_ positions: [Int32], at a: Int) -> Double { predictChunks(positions, cuts: [a]) }

    /// Predicted seconds of the forward pass in chunks cut at `cuts`, by
    /// playing out the stagger (see the type's notes).
    public func predictChunks(_ positions: [Int32], cuts: [Int]) -> Double {
        let bounds = [0] + cuts + [positions.count]
        let chunks = zip(bounds, bounds.dropFirst()).map { $0 ..< $1 }
        let attention = chunks.map { gemmTime(rows: $0.count, weights: shape.attentionWeights) + attentionTime(positions[$0]) }
        let mlp = chunks.map { gemmTime(rows: $0.count, weights: shape.mlpWeights) }
        let sparseMLP = shape.experts.map { x in chunks.map { expertTime(rows: $0.count, experts: x) } }
        let comm = chunks.map { commTime(rows: $0.count) }
        var computeClock = 0.0, linkClock = 0.0
        var ready = [Double](repeating: 0, count: chunks.count)
        func reduce(_ c: Int) {
            let start = max(linkClock, computeClock)
            linkClock = start + comm[c]
            ready[c] = linkClock
            // On one node's cores the reduction takes the compute thread's time too.
            if !costs.collectiveOverlapsCompute { computeClock = linkClock }
        }
        for c in chunks.indices { reduce(c) }   // the embedding's reductions
        for layer in 0..<shape.layerCount {
            let layerMLP = shape.isSparse(layer: layer) ? sparseMLP ?? mlp : mlp
            for phase in [attention, layerMLP] {
                for c in chunks.indices {
                    computeClock = max(computeClock, ready[c]) + phase[c]
                    reduce(c)
                }
            }
        }
        return max(computeClock, ready.max() ?? 0)
    }

    /// Candidate cut points for two chunks: multiples of the granule, both halves non-empty.
    public func candidates(count t: Int) -> [Int] {
        guard t >= 2 else { return [] }
        let aligned = stride(from: granule, to: t, by: granule).map { $0 }
        return aligned.isEmpty ? [t / 2] : aligned
    }

    /// Cuts into `chunks` chunks of about equal predicted compute (GEMM rows
    /// plus causal attention), on multiples of the granule; nil when the batch
    /// has too few granules (two chunks: the best of every candidate cut).
    public func cuts(positions: [Int32], chunks: Int) -> [Int]? {
        let t = positions.count
        guard chunks >= 2 else { return nil }
        if chunks == 2 { return bestSplit(positions: positions).map { [$0] } }
        guard t >= chunks * granule else { return nil }
        // Cost of each row: its share of the GEMMs plus its attention pairs.
        let perRow: Double
        if let x = shape.experts {
            // A sparse layer's row multiplies k experts' weights (its share of them on this rank) and the shared ones.
            let sparse = Double(min(x.layers, shape.layerCount)), dense = Double(shape.layerCount) - sparse
            let mlp = (dense * Double(shape.mlpWeights) + sparse * (x.weightsPerToken + Double(x.sharedWeights))) / Double(max(shape.layerCount, 1))
            perRow = 2 * (Double(shape.attentionWeights) + mlp) / costs.gemmFlopsPerSecond
        } else {
            perRow = 2 * Double(shape.attentionWeights + shape.mlpWeights) / costs.gemmFlopsPerSecond
        }
        let rowCost = positions.map { perRow + Double($0 + 1) / costs.attentionPairsPerSecond }
        let total = rowCost.reduce(0, +)
        var cuts: [Int] = [], running = 0.0, row = 0
        for c in 1..<chunks {
            let target = total * Double(c) / Double(chunks)
            while row < t && running + rowCost[row] / 2 < target { running += rowCost[row]; row += 1 }
            var cut = Int((Double(row) / Double(granule)).rounded()) * granule
            cut = max(cut, (cuts.last ?? 0) + granule)
            guard cut + (chunks - c) * granule <= t else { return nil }
            cuts.append(cut)
        }
        return cuts
    }

    /// The best cuts for 2…`maxChunks` chunks regardless of profit (for a
    /// forced `overlap` mode), with their predicted time; nil when the batch
    /// is too small to cut.
    public func bestCuts(positions: [Int32]) -> (cuts: [Int], predicted: Double)? {
        var best: (cuts: [Int], predicted: Double)?
        for k in 2...max(2, maxChunks) {
            guard let cuts = cuts(positions: positions, chunks: k) else { continue }
            let time = predictChunks(positions, cuts: cuts)
            if best == nil || time < best!.predicted { best = (cuts, time) }
        }
        return best
    }

    public func decide(positions: [Int32]) -> Decision {
        let unsplit = predictUnsplit(positions)
        guard let best = bestCuts(positions: positions), best.predicted < unsplit * (1 - minimumGain) else {
            return .unsplit(predicted: unsplit)
        }
        return .split(cuts: best.cuts, predicted: best.predicted, unsplitPredicted: unsplit)
    }

    /// The best cut into two halves regardless of profit, or nil when the
    /// batch is too small to cut.
    public func bestSplit(positions: [Int32]) -> Int? {
        candidates(count: positions.count).min { predictSplit(positions, at: $0) < predictSplit(positions, at: $1) }
    }

    /// `CommMode.overlap`'s schedule: the best predicted cuts into
    /// 2…`maxChunks` chunks (or into exactly `chunks`), whether or not they
    /// beat the unsplit pass; nil when the batch is too small to cut so.
    public func overlapSchedule(positions: [Int32], chunks: Int? = nil) -> Schedule? {
        let cuts: [Int]?
        if let chunks { cuts = self.cuts(positions: positions, chunks: chunks) } else { cuts = bestCuts(positions: positions)?.cuts }
        // The planner's cuts are increasing and inside the batch by construction.
        return cuts.flatMap { try? Schedule.Cuts($0, rows: positions.count) }.map(Schedule.overlap)
    }

    /// `CommMode.auto`'s schedule: overlapped at `decide`'s cuts when they are
    /// predicted to beat the unsplit fused pass by `minimumGain`, else fused.
    public func schedule(positions: [Int32]) -> Schedule {
        guard case .split(let cuts, _, _) = decide(positions: positions),
              let chunks = try? Schedule.Cuts(cuts, rows: positions.count) else { return .fused }
        return .overlap(chunks)
    }
}
