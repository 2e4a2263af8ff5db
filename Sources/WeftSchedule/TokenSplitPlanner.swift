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
    func gemmTime(rows: Int, weights: Int) -> Double {
        guard rows > 0 else { return 0 }
        return max(2 * Double(rows) * Double(weights) / costs.gemmFlopsPerSecond,
                   Double(weights) * 4 / costs.weightBytesPerSecond)
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
        let mlp = gemmTime(rows: t, weights: shape.mlpWeights)
        return Double(shape.layerCount) * (attention + mlp + 2 * commTime(rows: t))
    }

    public func predictSplit(_ positions: [Int32], at a: Int) -> Double { predictChunks(positions, cuts: [a]) }

    /// Predicted seconds of the forward pass in chunks cut at `cuts`, by
    /// playing out the stagger (see the type's notes).
    public func predictChunks(_ positions: [Int32], cuts: [Int]) -> Double {
        let bounds = [0] + cuts + [positions.count]
        let chunks = zip(bounds, bounds.dropFirst()).map { $0 ..< $1 }
        let attention = chunks.map { gemmTime(rows: $0.count, weights: shape.attentionWeights) + attentionTime(positions[$0]) }
        let mlp = chunks.map { gemmTime(rows: $0.count, weights: shape.mlpWeights) }
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
        for _ in 0..<shape.layerCount {
            for phase in [attention, mlp] {
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
        let perRow = 2 * Double(shape.attentionWeights + shape.mlpWeights) / costs.gemmFlopsPerSecond
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
