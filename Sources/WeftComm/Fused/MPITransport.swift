import Foundation
import WeftTensor

/// Every rank alone on its node: the pairwise reduce-scatter of
/// `CrossNodeExchange` over all ranks, the fused residual + RMSNorm of this
/// rank's block, and an all-gather of the normalized blocks.
final class MPITransport: FusedTransport {
    let communicator: Communicator
    private let hidden: Int
    private let timeout: Double
    private let exchange: CrossNodeExchange
    private var partialsBuffer: FloatBuffer?
    private var normedBuffer: FloatBuffer?
    var partials: UnsafeMutablePointer<Float>! { partialsBuffer?.pointer }
    var normed: UnsafeMutablePointer<Float>! { normedBuffer?.pointer }

    init(communicator: Communicator, hidden: Int, wire: WireFormat, timeout: Double) {
        self.communicator = communicator
        self.hidden = hidden
        self.timeout = timeout
        exchange = CrossNodeExchange(parts: communicator.size, index: communicator.rank, hidden: hidden,
                                     comm: communicator.comm, wire: wire)
    }

    func shard(of rows: Range<Int>) -> Range<Int> {
        rowBlock(rows, parts: communicator.size, index: communicator.rank)
    }

    func reserve(rows: Int) throws {
        partialsBuffer = FloatBuffer(count: rows * hidden)
        normedBuffer = FloatBuffer(count: rows * hidden)
        exchange.reserve(rows: rows)
    }

    private enum Stage { case start, reduceScatter, allGather }

    func stateMachine(for op: FusedResidualNorm.Operation, _ step: FusedStep, trace: TraceRecorder?) -> () -> Bool {
        var stage = Stage.start
        let rows = step.rows, h = hidden
        let exchange = self.exchange, monitor = communicator.monitor, timeout = self.timeout
        let source = UnsafePointer(partials + rows.lowerBound * h)
        let destination = normed + rows.lowerBound * h
        var mark: UInt64 = 0
        return {
            do {
                switch stage {
                case .start:
                    guard !rows.isEmpty else { return true }
                    mark = TraceRecorder.now()
                    try exchange.startReduceScatter(rows: rows, source: source)
                    stage = .reduceScatter
                    return false
                case .reduceScatter:
                    guard try exchange.reduceScatterDone() else {
                        try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the fused all-reduce (reduce-scatter between nodes)")
                        return false
                    }
                    op.deadline = .distantFuture
                    let now = TraceRecorder.now()
                    trace?.add("reduce-scatter \(rows.count) rows", lane: .comm, from: mark, to: now,
                               bytes: exchange.bytesSent(rows: rows, phase: .reduceScatter))
                    try exchange.normalizeAndStartGather(rows: rows, source: source, residual: step.residual, weight: step.weight, eps: step.eps)
                    mark = TraceRecorder.now()
                    trace?.add("norm", lane: .comm, from: now, to: mark)
                    stage = .allGather
                    return false
                case .allGather:
                    guard try exchange.gatherDone() else {
                        try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the fused all-reduce (MPI all-gather)")
                        return false
                    }
                    exchange.finishGather(rows: rows, into: destination)
                    trace?.add("all-gather \(rows.count) rows", lane: .comm, from: mark, to: TraceRecorder.now(),
                               bytes: exchange.bytesSent(rows: rows, phase: .allGather))
                    return true
                }
            } catch {
                op.error = error
                return true
            }
        }
    }
}
