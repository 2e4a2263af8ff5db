import CMPI
import Foundation

/// Which ranks share memory: this rank's node, its place on it, and the ranks
/// of the same local index on the other nodes. Discovered once, collectively.
struct NodeTopology {
    /// The ranks on this rank's node.
    let nodeComm: MPI_Comm
    /// The ranks with this rank's local index, one per node.
    let crossComm: MPI_Comm
    let localRank: Int
    let localSize: Int
    /// World rank of each local rank (to name a peer in errors).
    let nodeRanks: [Int]
    /// This node's index among the nodes, and the number of nodes.
    let nodeIndex: Int
    let nodeCount: Int
    /// Whether every node holds the same number of ranks.
    let uniform: Bool

    /// - Parameter ranksPerNode: treat consecutive groups of this many ranks as
    ///   nodes (to exercise the inter-node paths on one machine); nil asks MPI
    ///   which ranks share memory.
    static func discover(_ communicator: Communicator, ranksPerNode: Int?) throws -> NodeTopology {
        let rank = communicator.rank
        return try communicator.thread.run { () throws -> NodeTopology in
            var node: MPI_Comm? = nil, cross: MPI_Comm? = nil
            if let ranksPerNode {
                try check(MPI_Comm_split(CMPI_COMM_WORLD(), Int32(rank / ranksPerNode), Int32(rank), &node), "MPI_Comm_split")
            } else {
                try check(MPI_Comm_split_type(CMPI_COMM_WORLD(), CMPI_COMM_TYPE_SHARED(), Int32(rank), CMPI_INFO_NULL(), &node),
                          "MPI_Comm_split_type")
            }
            var local: Int32 = 0, localCount: Int32 = 0
            MPI_Comm_rank(node, &local)
            MPI_Comm_size(node, &localCount)
            try check(MPI_Comm_split(CMPI_COMM_WORLD(), local, Int32(rank), &cross), "MPI_Comm_split")
            var worldGroup: MPI_Group? = nil, nodeGroup: MPI_Group? = nil
            MPI_Comm_group(CMPI_COMM_WORLD(), &worldGroup)
            MPI_Comm_group(node, &nodeGroup)
            var locals = (0..<localCount).map { Int32($0) }
            var worlds = [Int32](repeating: 0, count: Int(localCount))
            try check(MPI_Group_translate_ranks(nodeGroup, localCount, &locals, worldGroup, &worlds), "MPI_Group_translate_ranks")
            MPI_Group_free(&worldGroup)
            MPI_Group_free(&nodeGroup)
            var index: Int32 = 0, nodes: Int32 = 0
            MPI_Comm_rank(cross, &index)
            MPI_Comm_size(cross, &nodes)
            var counts: (Int64, Int64) = (Int64(localCount), -Int64(localCount))
            var extremes: (Int64, Int64) = (0, 0)
            try check(MPI_Allreduce(&counts, &extremes, 2, CMPI_INT64(), CMPI_MAX(), CMPI_COMM_WORLD()), "MPI_Allreduce")
            return NodeTopology(nodeComm: node!, crossComm: cross!, localRank: Int(local), localSize: Int(localCount),
                                nodeRanks: worlds.map { Int($0) }, nodeIndex: Int(index), nodeCount: Int(nodes),
                                uniform: extremes.0 == -extremes.1)
        }
    }
}

extension Communicator {
    /// Ranks sharing this rank's node (an MPI shared-memory domain).
    public func nodeSize() throws -> Int {
        try thread.run {
            var node: MPI_Comm? = nil
            try check(MPI_Comm_split_type(CMPI_COMM_WORLD(), CMPI_COMM_TYPE_SHARED(), 0, CMPI_INFO_NULL(), &node), "MPI_Comm_split_type")
            var n: Int32 = 0
            MPI_Comm_size(node, &n)
            MPI_Comm_free(&node)
            return Int(n)
        }
    }
}
