import CKernels
import Foundation
import WeftComm
import WeftModel
import WeftTensor

/// Runs the tensor-parallel forward pass of any decoder (`DecoderLayers`) on
/// one rank under a `Schedule`: the unsplit pass or TokenWeave's stagger over
/// chunks, the reductions between the architecture's pieces (all-reduce, the
/// fused collective, or none), the time spent on them, and the trace.
///
/// Every rank calls `forward` with the same batch and schedule; the pieces
/// leave partial sums, and each reduction sums them over the ranks, adds them
/// to the residual stream and normalizes with the next piece's norm weight.
public final class DecoderRunner {
    public let layers: any DecoderLayers
    public let communicator: Communicator
    /// The fused reduce + residual + norm collective (nil: baseline and skipped reductions only).
    public let collective: FusedResidualNorm?
    /// Seconds the compute thread has spent inside or waiting for the
    /// per-layer reductions (exposed communication: overlap hides the rest).
    public private(set) var communicationSeconds = 0.0
    /// Records the compute thread's spans (each stagger step, each wait for a
    /// reduction) when set; the collective records the comm thread's.
    public var trace: TraceRecorder? {
        didSet { collective?.trace = trace }
    }
    /// The residual stream (under the fused collective, each rank keeps only
    /// its rows' share current), and the all-reduce's partial sums and
    /// normalized rows (the fused collective has its own, in its window).
    private(set) var residual = FloatBuffer(count: 0), partials = FloatBuffer(count: 0), normed = FloatBuffer(count: 0)
    private var capacity = 0

    /// Sizes the runner's rows for a batch of up to `rows` tokens.
    func reserveRows(_ rows: Int) {
        guard capacity < rows else { return }
        let h = layers.hiddenSize
        capacity = max(rows, 16)
        residual = FloatBuffer(count: capacity * h)
        partials = FloatBuffer(count: capacity * h)
        normed = FloatBuffer(count: capacity * h)
    }

    public init(layers: any DecoderLayers, communicator: Communicator, collective: FusedResidualNorm? = nil) {
        self.layers = layers
        self.communicator = communicator
        self.collective = collective
    }

    /// Runs the batch through the decoder, writing its keys and values into
    /// the cache, and returns this rank's slice of the logits of
    /// `batch.logitRows` (as `DecoderPass.logits` gives them).
    ///
    /// - Parameter schedule: how the reductions run; an overlapped schedule
    ///   must have been cut for this batch's size.
    public func forward(_ batch: FlatBatch, schedule: Schedule = .baseline) throws -> [Float] {
        try layers.validate(batch)
        let t = batch.count
        guard t > 0 else { return [] }
        if case .overlap(let cuts) = schedule, cuts.rows != t {
            throw ModelError.input("an overlapped pass was cut for \(cuts.rows) tokens, but the batch has \(t)")
        }
        let reduction: Reduction
        switch schedule {
        case .baseline: reduction = .allReduce
        case .fused, .overlap:
            guard let collective else { throw ModelError.input("a fused or overlapped pass needs the fused collective, which this runner was built without") }
            try collective.reserve(rows: t)
            reduction = .fused(collective)
        case .skipReductions: reduction = .skip
        }
        let h = layers.hiddenSize
        reserveRows(t)
        residual.pointer.update(repeating: 0, count: t * h)
        let buffers: PassBuffers
        if case .fused(let collective) = reduction {
            buffers = PassBuffers(partials: collective.partials, normed: collective.normed)
        } else {
            buffers = PassBuffers(partials: partials.pointer, normed: normed.pointer)
        }
        let pass = try layers.beginPass(batch, buffers: buffers)

        let trace = self.trace, pool = layers.pool, eps = layers.rmsNormEps, stream = residual.pointer
        /// Runs one compute step, recorded as a span when tracing.
        func compute(_ name: @autoclosure () -> String, _ body: () -> Void) {
            if let trace { trace.measure(name(), lane: .compute, body) } else { body() }
        }
        /// Runs or waits for a reduction, recorded as a wait when tracing.
        func wait(_ name: @autoclosure () -> String, _ body: () throws -> Void) throws {
            if let trace { try trace.measure(name(), lane: .wait, body) } else { try body() }
        }
        /// Counts the time of communication proper in `communicationSeconds`.
        func timed(_ body: () throws -> Void) rethrows {
            let start = DispatchTime.now().uptimeNanoseconds
            defer { communicationSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
            try body()
        }
        /// Sums the partials of `rows` over the ranks, adds them to the
        /// residual and writes RMSNorm(residual) · weight to the normalized rows.
        func reduce(_ rows: Range<Int>, weight: FloatBuffer, _ name: @autoclosure () -> String) throws {
            let offset = rows.lowerBound * h, count = Int32(rows.count)
            let partials = buffers.partials + offset, normed = buffers.normed + offset
            try wait(name()) {
                switch reduction {
                case .allReduce:
                    try timed { try communicator.allReduceSum(partials, count: rows.count * h) }
                    weft_op_add_rmsnorm(pool.raw, stream + offset, h, partials, h, weight.pointer, normed, h, count, Int32(h), eps)
                case .skip:
                    // Timing ideal only: nothing is summed (results are wrong for N > 1).
                    weft_op_add_rmsnorm(pool.raw, stream + offset, h, partials, h, weight.pointer, normed, h, count, Int32(h), eps)
                case .fused(let collective):
                    try timed { try collective.run(rows: rows, residual: stream, weight: weight.pointer, eps: eps, pool: pool) }
                }
            }
        }

        let layerCount = layers.layerCount
        compute("embed") { pass.embed() }
        if case .overlap(let cuts) = schedule, case .fused(let collective) = reduction {
            // TokenWeave's stagger, in K chunks: each chunk's compute runs
            // while the earlier chunks' reductions are in flight on the comm
            // thread. With two chunks (A, B): attention A, attention B, MLP A,
            // MLP B, each beside the other half's reduction. More chunks give
            // a reduction after attention more than one short attention step
            // to hide behind.
            func begin(_ rows: Range<Int>, weight: FloatBuffer) -> FusedResidualNorm.Operation {
                collective.begin(rows: rows, residual: stream, weight: weight.pointer, eps: eps)
            }
            func finish(_ operation: FusedResidualNorm.Operation, _ name: @autoclosure () -> String) throws {
                try wait(name()) { try timed { try collective.finish(operation) } }
            }
            let chunks = cuts.chunks
            let names = chunks.indices.map { chunks.count == 2 ? ["A", "B"][$0] : "c\($0)" }
            var pending = chunks.map { begin($0, weight: layers.inputNorm(layer: 0)) }
            for layer in 0..<layerCount {
                for (c, rows) in chunks.enumerated() {
                    try finish(pending[c], "wait \(names[c]) L\(layer) in")
                    compute("attention \(names[c]) L\(layer)") { pass.attention(rows, layer: layer) }
                    pending[c] = begin(rows, weight: layers.postAttentionNorm(layer: layer))
                }
                for (c, rows) in chunks.enumerated() {
                    try finish(pending[c], "wait \(names[c]) L\(layer) attn")
                    compute("mlp \(names[c]) L\(layer)") { pass.mlp(rows, layer: layer) }
                    pending[c] = begin(rows, weight: layers.inputNorm(layer: layer + 1))
                }
            }
            for (c, operation) in pending.enumerated() { try finish(operation, "wait \(names[c]) out") }
        } else {
            let all = 0..<t
            try reduce(all, weight: layers.inputNorm(layer: 0), "reduce in")
            for layer in 0..<layerCount {
                compute("attention L\(layer)") { pass.attention(all, layer: layer) }
                try reduce(all, weight: layers.postAttentionNorm(layer: layer), "reduce L\(layer) attn")
                compute("mlp L\(layer)") { pass.mlp(all, layer: layer) }
                try reduce(all, weight: layers.inputNorm(layer: layer + 1), "reduce L\(layer) mlp")
            }
        }
        var logits: [Float] = []
        compute("logits") { logits = pass.logits() }
        return logits
    }

    /// How a pass sums a range's partials over the ranks.
    enum Reduction {
        case allReduce
        case fused(FusedResidualNorm)
        case skip
    }
}
