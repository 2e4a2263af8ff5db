import CKernels
import WeftComm
import WeftModel
import WeftTensor

extension TokenSplitPlanner {
    /// The planner for this job: measures the decoder's compute
    /// (`DecoderLayers.measureComputeRates`) and the runner's fused collective
    /// on this rank, then every rank adopts rank 0's calibration, so all ranks
    /// plan identical splits. Every rank calls this together (it runs collectives).
    ///
    /// - Parameter commCores: cores set aside for the comm thread; with none,
    ///   a shared-memory collective takes the compute cores' time, so the
    ///   planner does not count on it overlapping compute.
    public static func calibrated(runner: DecoderRunner, commCores: Int, rows: Int = 64, repeats: Int = 3) throws -> TokenSplitPlanner {
        let layers = runner.layers
        let compute = try layers.measureComputeRates(rows: rows, repeats: repeats)
        let (latency, perRow) = try runner.measureCollective(rows: rows, repeats: repeats)
        let transport = runner.collective?.transport ?? .mpi
        let costs = CostModel(gemmFlopsPerSecond: compute.gemmFlopsPerSecond, weightBytesPerSecond: compute.weightBytesPerSecond,
                              attentionPairsPerSecond: compute.attentionPairsPerSecond, collectiveLatency: latency,
                              collectiveSecondsPerRow: perRow,
                              collectiveOverlapsCompute: transport != .sharedMemory || commCores > 0,
                              expertSecondsPerWeight: compute.expertSecondsPerWeight)
        let weights = layers.layerWeights
        let local = Calibration(costs: costs, shape: LayerShape(attentionWeights: weights.attention, mlpWeights: weights.mlp,
                                                                layerCount: layers.layerCount, experts: layers.expertLayers))
        let root = try local.broadcast(over: runner.communicator)
        // Chunks of whole GEMM micro-kernel row blocks that reduce-scatter without padding.
        let granule = lcm(Int(weft_gemm_row_block()), runner.communicator.size)
        return TokenSplitPlanner(costs: root.costs, shape: root.shape, granule: granule)
    }

    static func lcm(_ a: Int, _ b: Int) -> Int {
        func gcd(_ x: Int, _ y: Int) -> Int { y == 0 ? x : gcd(y, x % y) }
        return a / gcd(a, b) * b
    }
}

extension DecoderRunner {
    /// The fused collective's fixed cost (one row) and cost per further row,
    /// in seconds, measured on `rows` rows; zeros without a collective.
    func measureCollective(rows: Int, repeats: Int) throws -> (latency: Double, perRow: Double) {
        guard let collective, rows > 1 else { return (0, 0) }
        let h = layers.hiddenSize
        try collective.reserve(rows: rows)
        reserveRows(rows)
        residual.pointer.update(repeating: 0, count: rows * h)
        collective.partials.update(repeating: 0, count: rows * h)
        let norm = layers.inputNorm(layer: 0).pointer, eps = layers.rmsNormEps, pool = layers.pool, stream = residual.pointer
        let single = try ComputeRates.medianSeconds(repeats) { try collective.run(rows: 0..<1, residual: stream, weight: norm, eps: eps, pool: pool) }
        let full = try ComputeRates.medianSeconds(repeats) { try collective.run(rows: 0..<rows, residual: stream, weight: norm, eps: eps, pool: pool) }
        return (single, max(0, full - single) / Double(rows - 1))
    }
}

/// What calibration settles for the split planner, as one value: the costs
/// measured on a rank and its local layer shape (uneven splits make shapes
/// differ slightly between ranks). Every rank adopts rank 0's, which travels
/// in one broadcast, bit-exact, so all ranks plan identical splits.
struct Calibration: Equatable {
    var costs: CostModel
    var shape: LayerShape

    /// Rank 0's calibration on every rank (every rank calls this together).
    func broadcast(over communicator: Communicator) throws -> Calibration {
        var words = encoded
        try communicator.broadcast(&words)
        return try Calibration(encoded: words)
    }

    /// 64-bit fields as pairs of Int32 (what the communicator broadcasts):
    /// the cost model's numbers as IEEE bit patterns, then the shape's counts,
    /// then the experts' (a presence flag and six counts, zeros for a dense model).
    var encoded: [Int32] {
        let x = shape.experts
        let expertCounts = x.map { [1, $0.count, $0.perToken, $0.held, $0.weightsPerExpert, $0.sharedWeights, $0.layers] }
            ?? [Int](repeating: 0, count: Calibration.expertFields)
        let counts = [shape.attentionWeights, shape.mlpWeights, shape.layerCount] + expertCounts
        let fields = costs.encoded.map { $0.bitPattern } + counts.map { UInt64(bitPattern: Int64($0)) }
        return fields.flatMap { [Int32(truncatingIfNeeded: $0), Int32(truncatingIfNeeded: $0 >> 32)] }
    }

    /// Counts in the experts' part of `encoded`.
    static let expertFields = 7

    /// Numbers in `CostModel.encoded`.
    static let costFields = CostModel(gemmFlopsPerSecond: 0, weightBytesPerSecond: 0, attentionPairsPerSecond: 0, collectiveLatency: 0,
                                      collectiveSecondsPerRow: 0, collectiveOverlapsCompute: false).encoded.count

    init(costs: CostModel, shape: LayerShape) {
        self.costs = costs
        self.shape = shape
    }

    init(encoded words: [Int32]) throws {
        let costFields = Calibration.costFields, shapeFields = 3 + Calibration.expertFields
        guard words.count == 2 * (costFields + shapeFields) else {
            throw CommError.unsupported("malformed calibration of \(words.count) integers from rank 0")
        }
        let fields = stride(from: 0, to: words.count, by: 2).map {
            UInt64(UInt32(bitPattern: words[$0])) | UInt64(UInt32(bitPattern: words[$0 + 1])) << 32
        }
        let counts = fields[costFields...].map { Int(Int64(bitPattern: $0)) }
        costs = CostModel(encoded: fields[..<costFields].map { Double(bitPattern: $0) })
        let x = counts[3...].map { $0 }
        let experts = x[0] == 0 ? nil : ExpertLayerShape(count: x[1], perToken: x[2], held: x[3], weightsPerExpert: x[4],
                                                         sharedWeights: x[5], layers: x[6])
        shape = LayerShape(attentionWeights: counts[0], mlpWeights: counts[1], layerCount: counts[2], experts: experts)
    }
}
