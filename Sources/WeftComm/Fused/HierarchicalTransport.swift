import CKernels
import Foundation
import WeftTensor

/// Several ranks on each of several nodes. (1) Inside the node, local rank i
/// sums the node's partials of its local block L_i (shared memory); (2) the
/// ranks of local index i on all nodes reduce-scatter L_i with
/// `CrossNodeExchange`, each keeping 1/nodes of it, add their residual rows
/// and normalize; (3) an all-gather returns all of L_i normalized, published
/// in the rank's segment; (4) local peers copy each other's blocks. Only
/// 1/localSize of the rows cross the network per rank.
final class HierarchicalTransport: FusedTransport {
    let communicator: Communicator
    private let topology: NodeTopology
    private let hidden: Int
    private let timeout: Double
    private let exchange: CrossNodeExchange
    private var window: SharedWindow?
    /// The node's sum of this rank's local block, sent between nodes.
    private var nodeSum: FloatBuffer?
    private var normedBuffer: FloatBuffer?
    private(set) var partials: UnsafeMutablePointer<Float>!
    var normed: UnsafeMutablePointer<Float>! { normedBuffer?.pointer }

    init(communicator: Communicator, topology: NodeTopology, hidden: Int, wire: WireFormat, timeout: Double) {
        self.communicator = communicator
        self.topology = topology
        self.hidden = hidden
        self.timeout = timeout
        exchange = CrossNodeExchange(parts: topology.nodeCount, index: topology.nodeIndex, hidden: hidden,
                                     comm: topology.crossComm, wire: wire)
    }

    /// The block of `rows` that local rank `localRank` sums on the node (and publishes normalized).
    private func localBlock(of rows: Range<Int>, localRank: Int) -> Range<Int> {
        rowBlock(rows, parts: topology.localSize, index: localRank)
    }

    func shard(of rows: Range<Int>) -> Range<Int> {
        rowBlock(localBlock(of: rows, localRank: topology.localRank), parts: topology.nodeCount, index: topology.nodeIndex)
    }

    func reserve(rows: Int) throws {
        window?.release()
        let window = try SharedWindow(communicator: communicator, topology: topology, hidden: hidden, rows: rows,
                                      sharedNormedArray: false, timeout: timeout)
        self.window = window
        partials = window.partials[topology.localRank]
        let blockRows = (rows + topology.localSize - 1) / topology.localSize
        nodeSum = FloatBuffer(count: blockRows * hidden)
        exchange.reserve(rows: blockRows)
        normedBuffer = FloatBuffer(count: rows * hidden)
    }

    func close() { window?.release() }

    private enum Stage { case publish, sumOnNode, reduceScatter, allGather, awaitNodeBlocks }

    func stateMachine(for op: FusedResidualNorm.Operation, _ step: FusedStep, trace: TraceRecorder?) -> () -> Bool {
        var stage = Stage.publish
        let h = hidden, topology = self.topology, timeout = self.timeout
        let local = localBlock(of: step.rows, localRank: topology.localRank)
        let send = nodeSum!.pointer, window = self.window!, normed = self.normed!
        let exchange = self.exchange, monitor = communicator.monitor
        return { [self] in
            func giveUp(_ peer: Int, _ what: String) -> Bool {
                op.giveUp(waitingFor: topology.nodeRanks[peer], timeout: timeout, what: what)
            }
            do {
                switch stage {
                case .publish:
                    window.raise(.partialsReady, epoch: op.epoch)
                    stage = .sumOnNode
                    return false
                case .sumOnNode:
                    if let peer = window.peerBehind(.partialsReady, epoch: op.epoch) {
                        return giveUp(peer, "the hierarchical all-reduce (partials ready on the node)")
                    }
                    op.deadline = .distantFuture
                    if !local.isEmpty {
                        var sources: [UnsafePointer<Float>?] = window.partials.map { UnsafePointer($0 + local.lowerBound * h) }
                        weft_sum_rows(&sources, Int32(topology.localSize), h, send, h, Int32(local.count), Int32(h))
                        try exchange.startReduceScatter(rows: local, source: send)
                    }
                    stage = .reduceScatter
                    return false
                case .reduceScatter:
                    if !local.isEmpty {
                        guard try exchange.reduceScatterDone() else {
                            try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the hierarchical all-reduce (reduce-scatter between nodes)")
                            return false
                        }
                        op.deadline = .distantFuture
                        try exchange.normalizeAndStartGather(rows: local, source: send, residual: step.residual, weight: step.weight, eps: step.eps)
                    }
                    stage = .allGather
                    return false
                case .allGather:
                    if !local.isEmpty {
                        guard try exchange.gatherDone() else {
                            try op.checkDeadline(monitor: monitor, timeout: timeout, what: "the hierarchical all-reduce (MPI all-gather between nodes)")
                            return false
                        }
                        op.deadline = .distantFuture
                        exchange.finishGather(rows: local, into: window.normedBlocks[topology.localRank] + local.lowerBound * h)
                    }
                    window.raise(.rowsNormalized, epoch: op.epoch)
                    stage = .awaitNodeBlocks
                    return false
                case .awaitNodeBlocks:
                    if let peer = window.peerBehind(.rowsNormalized, epoch: op.epoch) {
                        return giveUp(peer, "the hierarchical all-reduce (rows normalized on the node)")
                    }
                    for p in 0..<topology.localSize {
                        let block = localBlock(of: step.rows, localRank: p)
                        guard !block.isEmpty else { continue }
                        let offset = block.lowerBound * h
                        (normed + offset).update(from: window.normedBlocks[p] + offset, count: block.count * h)
                    }
                    return true
                }
            } catch {
                op.error = error
                return true
            }
        }
    }
}
