import CKernels
import Foundation
import WeftTensor

/// Every rank on one node: peers read each other's partial sums in an MPI-3
/// shared window, each reduces its shard and writes the normalized rows into
/// one shared array that all ranks read whole (nothing is copied).
final class SharedMemoryTransport: FusedTransport {
    let communicator: Communicator
    private let topology: NodeTopology
    private let hidden: Int
    private let timeout: Double
    private var window: SharedWindow?
    private(set) var partials: UnsafeMutablePointer<Float>!
    private(set) var normed: UnsafeMutablePointer<Float>!

    init(communicator: Communicator, topology: NodeTopology, hidden: Int, timeout: Double) {
        self.communicator = communicator
        self.topology = topology
        self.hidden = hidden
        self.timeout = timeout
    }

    func shard(of rows: Range<Int>) -> Range<Int> {
        rowBlock(rows, parts: topology.localSize, index: topology.localRank)
    }

    func reserve(rows: Int) throws {
        window?.release()
        let window = try SharedWindow(communicator: communicator, topology: topology, hidden: hidden, rows: rows,
                                      sharedNormedArray: true, timeout: timeout)
        self.window = window
        partials = window.partials[topology.localRank]
        normed = window.sharedNormed
    }

    func close() { window?.release() }

    /// Inline: the shard's reduction is spread over `pool` (not traced: the
    /// comm thread's lanes show only what runs on the comm thread).
    func run(_ op: FusedResidualNorm.Operation, _ step: FusedStep, pool: ComputePool, trace: TraceRecorder?) throws {
        let window = self.window!
        window.raise(.partialsReady, epoch: op.epoch)
        try window.wait(.partialsReady, epoch: op.epoch, what: "the fused all-reduce (partials ready)")
        let mine = shard(of: step.rows)
        if !mine.isEmpty {
            pool.run { t, n in
                let part = evenSplit(mine.count, parts: n, index: t)
                guard !part.isEmpty else { return }
                self.reduce(rows: mine.lowerBound + part.lowerBound ..< mine.lowerBound + part.upperBound, step, window: window)
            }
        }
        window.raise(.rowsNormalized, epoch: op.epoch)
        // Once every rank is done, all rows are in the shared array: nothing to copy.
        try window.wait(.rowsNormalized, epoch: op.epoch, what: "the fused all-reduce (rows normalized)")
    }

    private enum Stage { case publish, awaitPartials, awaitNormalized }

    /// The same steps as `run` for the comm thread (one thread reduces, flags are polled).
    func stateMachine(for op: FusedResidualNorm.Operation, _ step: FusedStep, trace: TraceRecorder?) -> () -> Bool {
        var stage = Stage.publish
        let window = self.window!
        return { [self] in
            func giveUp(_ peer: Int, _ what: String) -> Bool {
                op.giveUp(waitingFor: topology.nodeRanks[peer], timeout: timeout, what: what)
            }
            switch stage {
            case .publish:
                window.raise(.partialsReady, epoch: op.epoch)
                stage = .awaitPartials
                fallthrough
            case .awaitPartials:
                if let peer = window.peerBehind(.partialsReady, epoch: op.epoch) {
                    return giveUp(peer, "the fused all-reduce (partials ready)")
                }
                let mine = shard(of: step.rows)
                if !mine.isEmpty { reduce(rows: mine, step, window: window) }
                window.raise(.rowsNormalized, epoch: op.epoch)
                op.deadline = .distantFuture
                stage = .awaitNormalized
                fallthrough
            case .awaitNormalized:
                if let peer = window.peerBehind(.rowsNormalized, epoch: op.epoch) {
                    return giveUp(peer, "the fused all-reduce (rows normalized)")
                }
                return true
            }
        }
    }

    /// Sums all ranks' partials of `rows`, adds the residual, normalizes into the shared array.
    private func reduce(rows: Range<Int>, _ step: FusedStep, window: SharedWindow) {
        let h = hidden, offset = rows.lowerBound * h
        var sources: [UnsafePointer<Float>?] = window.partials.map { UnsafePointer($0 + offset) }
        weft_reduce_add_rmsnorm(&sources, Int32(topology.localSize), h, step.residual + offset, h, step.weight,
                                normed + offset, h, Int32(rows.count), Int32(h), step.eps)
    }
}
