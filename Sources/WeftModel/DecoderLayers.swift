import Foundation
import WeftTensor

/// One decoder architecture's layer maths on one rank, as the pieces a
/// schedule calls: WeftSchedule's `DecoderRunner` runs them unsplit or
/// staggered over chunks and owns everything between them (the residual
/// stream, the reductions, their timing and tracing). A new family, an MoE
/// say, conforms in a file of its own; the schedule does not change.
///
/// The pieces are row-parallel: each writes this rank's partial sums of
/// `hiddenSize`-wide rows to `PassBuffers.partials`; the runner sums them over
/// the ranks, adds them to the residual and writes RMSNorm(residual) · weight
/// (the weights below) to `PassBuffers.normed`, which the next piece reads.
/// All ranks run the same pieces on the same rows in the same order.
public protocol DecoderLayers: AnyObject {
    /// Width of the residual stream (`hidden_size`).
    var hiddenSize: Int { get }
    var layerCount: Int { get }
    var rmsNormEps: Float { get }
    /// The rank's compute threads (the reductions' residual + norm runs on them too).
    var pool: ComputePool { get }

    /// The RMSNorm weight of the reduction before layer `layer`'s attention;
    /// `layer == layerCount`: the final norm, before the logits.
    func inputNorm(layer: Int) -> FloatBuffer
    /// The RMSNorm weight of the reduction after layer `layer`'s attention, before its MLP.
    func postAttentionNorm(layer: Int) -> FloatBuffer

    /// Checks a batch against the model before any rank computes on it.
    func validate(_ batch: FlatBatch) throws
    /// Reserves the batch's KV cache positions and scratch and returns its
    /// pieces, which read and write `buffers` (at least `batch.count` rows each).
    func beginPass(_ batch: FlatBatch, buffers: PassBuffers) throws -> any DecoderPass

    /// Weight elements of one layer's attention and of a dense layer's MLP
    /// on this rank: the split planner's shape of a layer (`mlp` is 0 when
    /// every layer is sparse; `expertLayers` describes sparse layers).
    var layerWeights: (attention: Int, mlp: Int) { get }
    /// The sparse (mixture-of-experts) layers' work on this rank, for the
    /// split planner; nil for a dense model (the default).
    var expertLayers: ExpertLayerShape? { get }
    /// This rank's compute rates with the model's own weights and kernels, for
    /// the split planner (the runner measures the reductions itself).
    func measureComputeRates(rows: Int, repeats: Int) throws -> ComputeRates
}

extension DecoderLayers {
    public var expertLayers: ExpertLayerShape? { nil }
}

/// What the split planner needs of a model's sparse layers on one rank: a
/// router sends each token to `perToken` of `count` experts and each held
/// expert runs one GEMM over the tokens it got, so an expert's cost depends
/// on how many tokens reach it, not only on the batch's size.
public struct ExpertLayerShape: Sendable, Equatable {
    /// Routed experts of the model (E).
    public var count: Int
    /// Experts each token is routed to (k).
    public var perToken: Int
    /// Routed experts this rank multiplies: all E with tensor-parallel
    /// experts, its own share (about E/N) with expert parallelism.
    public var held: Int
    /// Weight elements of one held expert on this rank (gate/up + down): a
    /// slice with tensor-parallel experts, the whole expert with expert parallelism.
    public var weightsPerExpert: Int
    /// Weight elements every token multiplies in a sparse layer besides its
    /// routed experts: the router and this rank's slice of the shared expert
    /// (and its gate), 0 for none.
    public var sharedWeights: Int
    /// Sparse layers among the model's layers (the others' MLPs are dense).
    public var layers: Int

    public init(count: Int, perToken: Int, held: Int, weightsPerExpert: Int, sharedWeights: Int, layers: Int) {
        self.count = count
        self.perToken = perToken
        self.held = held
        self.weightsPerExpert = weightsPerExpert
        self.sharedWeights = sharedWeights
        self.layers = layers
    }

    /// Routed-expert weight elements one token multiplies on this rank, on
    /// average: k experts, of which the held share lives here.
    public var weightsPerToken: Double {
        Double(perToken) * Double(weightsPerExpert) * Double(held) / Double(max(count, 1))
    }
}

/// Where a pass's pieces meet the reductions: row-major, `hiddenSize` floats a row.
public struct PassBuffers {
    /// Each piece's partial sums on this rank (the reductions' input).
    public let partials: UnsafeMutablePointer<Float>
    /// Normalized rows (the reductions' output, the next piece's input).
    public let normed: UnsafeMutablePointer<Float>

    public init(partials: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>) {
        self.partials = partials
        self.normed = normed
    }
}

/// The pieces of one forward pass over one batch, each on a range of the
/// batch's rows. A later range of a sequence runs after an earlier one
/// within a phase, so its attention sees the earlier rows' keys and values.
public protocol DecoderPass {
    /// This rank's share of every row's embedding into `partials` (zeros
    /// elsewhere): the first reduction sums the shares.
    func embed()
    /// Layer `layer`'s attention of `rows` (their keys and values join the
    /// cache first), its output projection's partial sums into `partials`.
    func attention(_ rows: Range<Int>, layer: Int)
    /// Layer `layer`'s MLP of `rows`, its down projection's partial sums into `partials`.
    func mlp(_ rows: Range<Int>, layer: Int)
    /// This rank's slice of the logits of the rows that want them, from `normed`.
    func logits() -> [Float]
}

/// Rates of one rank's compute with a model's own weights, for the split planner.
public struct ComputeRates: Sendable, Equatable {
    /// Matrix-multiply rate on many rows, flop/s.
    public var gemmFlopsPerSecond: Double
    /// Rate at which a GEMM streams weights when rows are few (decode), as
    /// float32-equivalent bytes per second (the cost model streams 4 bytes per
    /// weight element), whatever the weights' format.
    public var weightBytesPerSecond: Double
    /// Attention: (query, key) pairs per second, summed over local heads.
    public var attentionPairsPerSecond: Double
    /// A mixture-of-experts model's expert GEMM on few rows: seconds per
    /// weight element at each of `ComputeRates.expertRows` rows, measured on
    /// one held expert (nil for a dense model). Between a row or two and a
    /// few dozen the kernel runs well below both the streaming and the
    /// arithmetic rate, which is where an expert's share of a chunk falls.
    public var expertSecondsPerWeight: [Double]?

    /// Row counts of `expertSecondsPerWeight`.
    public static let expertRows = [1, 2, 4, 8, 16, 32, 64]

    public init(gemmFlopsPerSecond: Double, weightBytesPerSecond: Double, attentionPairsPerSecond: Double,
                expertSecondsPerWeight: [Double]? = nil) {
        self.gemmFlopsPerSecond = gemmFlopsPerSecond
        self.weightBytesPerSecond = weightBytesPerSecond
        self.attentionPairsPerSecond = attentionPairsPerSecond
        self.expertSecondsPerWeight = expertSecondsPerWeight
    }

    /// Median seconds of `body` over `repeats` runs after one warm-up (the
    /// one timing rule of every calibration measurement).
    public static func medianSeconds(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }
}
