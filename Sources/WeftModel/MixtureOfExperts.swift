import CKernels
import Foundation
import WeftTensor

/// The experts each row of a batch goes to and their weights: the router's
/// softmax over every expert, its top `k`, renormalized to sum to 1 when
/// the architecture says so (Mixtral always, Qwen's `norm_topk_prob`), as
/// Hugging Face transformers computes it in float32.
public struct ExpertRouting: Sendable, Equatable {
    public let rows: Int
    public let k: Int
    /// Row r's experts are `experts[r*k ..< (r+1)*k]`, by falling weight.
    public var experts: [Int32]
    public var weights: [Float]

    public init(rows: Int, k: Int, experts: [Int32], weights: [Float]) {
        self.rows = rows
        self.k = k
        self.experts = experts
        self.weights = weights
    }

    /// Routes `rows` rows of router logits (`expertCount` a row, `ld` apart).
    /// Ties go to the lower expert index.
    public static func route(logits: UnsafePointer<Float>, ld: Int, rows: Int, expertCount: Int, k: Int,
                             normalize: Bool) -> ExpertRouting {
        var experts = [Int32](repeating: 0, count: rows * k)
        var weights = [Float](repeating: 0, count: rows * k)
        var probabilities = [Float](repeating: 0, count: expertCount)
        for r in 0..<rows {
            let row = logits + r * ld
            var top = -Float.infinity
            for e in 0..<expertCount { top = max(top, row[e]) }
            var sum: Float = 0
            for e in 0..<expertCount {
                probabilities[e] = expf(row[e] - top)
                sum += probabilities[e]
            }
            for e in 0..<expertCount { probabilities[e] /= sum }
            // Top k by selection (k is small: 1 to 8 in released models).
            var chosenSum: Float = 0
            for j in 0..<k {
                var best = -1
                for e in 0..<expertCount where best < 0 || probabilities[e] > probabilities[best] { best = e }
                experts[r * k + j] = Int32(best)
                weights[r * k + j] = probabilities[best]
                chosenSum += probabilities[best]
                probabilities[best] = -1
            }
            if normalize { for j in 0..<k { weights[r * k + j] /= chosenSum } }
        }
        return ExpertRouting(rows: rows, k: k, experts: experts, weights: weights)
    }

    /// Tokens routed to each expert (a row counts once per chosen expert).
    public func counts(expertCount: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: expertCount)
        for e in experts { counts[Int(e)] += 1 }
        return counts
    }
}

/// Tokens routed to each expert, summed over layers and passes since the
/// last `take`: the input of the expert-parallel load report (routing is
/// the same on every rank, so any rank can tell every rank's load).
public struct ExpertLoad: Sendable, Equatable {
    public var perExpert: [Int]
    /// Sparse-layer passes counted (a layer run in chunks counts once per chunk).
    public var layerPasses: Int
    /// Over those passes, the sum of the busiest rank's routed tokens, and of
    /// every rank's, under the model's placement. Every pass ends in a
    /// reduction that waits for the slowest rank, so the critical path is
    /// the sum of each pass's busiest rank, not the busiest rank's sum.
    public var busiestRankRouted: Int
    public var allRanksRouted: Int

    public init(expertCount: Int) {
        perExpert = [Int](repeating: 0, count: expertCount)
        layerPasses = 0
        busiestRankRouted = 0
        allRanksRouted = 0
    }

    /// Counts one sparse-layer pass's routing on `size` ranks under `placement`.
    public mutating func record(_ routing: ExpertRouting, size: Int, placement: TensorParallelPlan.MoEPlacement) {
        var pass = ExpertLoad(expertCount: perExpert.count)
        for e in routing.experts { pass.perExpert[Int(e)] += 1 }
        let loads = pass.perRank(size: size, placement: placement)
        for (e, n) in pass.perExpert.enumerated() { perExpert[e] += n }
        layerPasses += 1
        busiestRankRouted += loads.max() ?? 0
        allRanksRouted += loads.reduce(0, +)
    }

    /// Adds another count (of the same model) to this one.
    public mutating func add(_ other: ExpertLoad) {
        for (e, n) in other.perExpert.enumerated() where e < perExpert.count { perExpert[e] += n }
        layerPasses += other.layerPasses
        busiestRankRouted += other.busiestRankRouted
        allRanksRouted += other.allRanksRouted
    }

    /// Routed tokens each of `size` ranks computed under `placement`: its
    /// own experts' with expert parallelism, every expert's slice (all of
    /// them, each a 1/size share) with tensor-parallel experts.
    public func perRank(size: Int, placement: TensorParallelPlan.MoEPlacement) -> [Int] {
        let total = perExpert.reduce(0, +)
        guard placement == .expertParallel else { return [Int](repeating: total, count: size) }
        return (0..<size).map { r in TensorParallelPlan.heldExperts(perExpert.count, size: size, rank: r).reduce(0) { $0 + perExpert[$1] } }
    }

    /// The critical path's routed tokens over a balanced one's: each pass's
    /// busiest rank summed over the passes, over the mean rank's sum (1:
    /// balanced; always 1 with tensor-parallel experts). Without per-pass
    /// counts (a load assembled by hand), the busiest rank's total over the mean's.
    public func imbalance(size: Int, placement: TensorParallelPlan.MoEPlacement) -> Double {
        if allRanksRouted > 0 { return Double(busiestRankRouted) * Double(size) / Double(allRanksRouted) }
        let loads = perRank(size: size, placement: placement)
        let mean = Double(loads.reduce(0, +)) / Double(max(size, 1))
        return mean > 0 ? Double(loads.max()!) / mean : 1
    }
}

/// A sparse layer's working memory on one rank, sized for `capacity` rows.
final class ExpertWorkspace {
    let capacity: Int
    let logits: FloatBuffer
    let input, output: FloatBuffer
    let gateUp, activated: FloatBuffer
    let sharedGate: FloatBuffer

    init(capacity: Int, hidden: Int, expertCount: Int, intermediate: Int) {
        self.capacity = capacity
        logits = FloatBuffer(count: capacity * expertCount)
        input = FloatBuffer(count: capacity * hidden)
        output = FloatBuffer(count: capacity * hidden)
        gateUp = FloatBuffer(count: capacity * 2 * intermediate)
        activated = FloatBuffer(count: capacity * intermediate)
        sharedGate = FloatBuffer(count: capacity)
    }
}

extension LlamaWeights.ExpertWeights {
    /// The sparse feed-forward of `rows` rows of `x` (`h` wide): this rank's
    /// partial sums into `out`, which it overwrites. Tokens are grouped by
    /// expert, so each held expert runs one GEMM over its tokens and an
    /// expert no token chose costs nothing. With tensor-parallel experts the
    /// partial sums are slices of every chosen expert's product; with expert
    /// parallelism they are whole products of this rank's experts; either
    /// way the reduction after the layer sums them into the layer's output.
    func forward(rows: Int, x: UnsafePointer<Float>, h: Int, out: UnsafeMutablePointer<Float>,
                 moe: ModelConfig.MixtureOfExperts, pool: ComputePool, ws: ExpertWorkspace) -> ExpertRouting {
        let e = moe.expertCount
        router.apply(pool: pool, rows: rows, x: x, ldx: h, y: ws.logits.pointer, ldy: e)
        let routing = ExpertRouting.route(logits: ws.logits.pointer, ld: e, rows: rows, expertCount: e,
                                          k: moe.expertsPerToken, normalize: moe.normalizeTopK)
        out.update(repeating: 0, count: rows * h)

        // Rows of each held expert (counting sort by expert), with their weights.
        var start = [Int](repeating: 0, count: e + 1)
        for chosen in routing.experts { start[Int(chosen) + 1] += 1 }
        for i in 0..<e { start[i + 1] += start[i] }
        var fill = start
        var members = [Int32](repeating: 0, count: routing.experts.count)
        var memberWeights = [Float](repeating: 0, count: routing.experts.count)
        for (slot, chosen) in routing.experts.enumerated() {
            let expert = Int(chosen)
            members[fill[expert]] = Int32(slot / routing.k)
            memberWeights[fill[expert]] = routing.weights[slot]
            fill[expert] += 1
        }

        for expert in held where start[expert + 1] > start[expert] {
            let local = expert - held.lowerBound
            let first = start[expert], count = start[expert + 1] - first
            let inter = down[local].inFeatures
            members.withUnsafeBufferPointer { m in
                weft_gather_rows(x, h, m.baseAddress! + first, Int32(count), Int32(h), ws.input.pointer, h)
            }
            gateUp[local].apply(pool: pool, rows: count, x: ws.input.pointer, ldx: h, y: ws.gateUp.pointer, ldy: 2 * inter)
            weft_op_silu_mul(pool.raw, ws.gateUp.pointer, ws.gateUp.pointer + inter, 2 * inter, ws.activated.pointer, inter,
                             Int32(count), Int32(inter))
            down[local].apply(pool: pool, rows: count, x: ws.activated.pointer, ldx: inter, y: ws.output.pointer, ldy: h)
            members.withUnsafeBufferPointer { m in
                memberWeights.withUnsafeBufferPointer { w in
                    weft_scatter_add_scaled(out, h, m.baseAddress! + first, w.baseAddress! + first, Int32(count), Int32(h),
                                            ws.output.pointer, h)
                }
            }
        }

        if let shared {
            // Every token: sigmoid(gate · x) times this rank's slice of the shared expert.
            let inter = shared.down.inFeatures
            shared.gateUp.apply(pool: pool, rows: rows, x: x, ldx: h, y: ws.gateUp.pointer, ldy: 2 * inter)
            weft_op_silu_mul(pool.raw, ws.gateUp.pointer, ws.gateUp.pointer + inter, 2 * inter, ws.activated.pointer, inter,
                             Int32(rows), Int32(inter))
            shared.down.apply(pool: pool, rows: rows, x: ws.activated.pointer, ldx: inter, y: ws.output.pointer, ldy: h)
            shared.gate.apply(pool: pool, rows: rows, x: x, ldx: h, y: ws.sharedGate.pointer, ldy: 1)
            for r in 0..<rows { ws.sharedGate.pointer[r] = 1 / (1 + expf(-ws.sharedGate.pointer[r])) }
            var identity = (0..<Int32(rows)).map { $0 }
            identity.withUnsafeMutableBufferPointer { m in
                weft_scatter_add_scaled(out, h, m.baseAddress!, ws.sharedGate.pointer, Int32(rows), Int32(h), ws.output.pointer, h)
            }
        }
        return routing
    }
}
