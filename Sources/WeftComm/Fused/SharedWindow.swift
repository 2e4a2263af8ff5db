import CKernels
import CMPI
import Foundation

/// An MPI-3 shared-memory window over the ranks of one node. Every local rank
/// owns a segment: two flags (each on its own cache line), its partial sums
/// [rows × hidden] and a block of normalized rows [rows × hidden]. Optionally
/// local rank 0's segment also holds one array of normalized rows that every
/// rank writes its shard into and all read whole (`sharedNormed`).
final class SharedWindow {
    /// The two flags of a segment: a rank raises its own to an operation's
    /// epoch once it reached that step; peers poll them.
    enum Flag: Int {
        /// This rank's partial sums of the operation are written.
        case partialsReady = 0
        /// This rank's normalized rows of the operation are written.
        case rowsNormalized = 64
    }

    static let flagBytes = 128

    private let communicator: Communicator
    private let topology: NodeTopology
    private let timeout: Double
    private var window: MPI_Win?
    private var flags: [Flag: [UnsafeMutablePointer<UInt64>]] = [:]
    /// Every local rank's partial sums, and its block of normalized rows.
    private(set) var partials: [UnsafeMutablePointer<Float>] = []
    private(set) var normedBlocks: [UnsafeMutablePointer<Float>] = []
    /// The array of normalized rows all local ranks share (nil unless asked for).
    private(set) var sharedNormed: UnsafeMutablePointer<Float>?

    /// Allocates the window (collective over the node: every local rank calls
    /// it with the same values) with room for `rows` rows.
    init(communicator: Communicator, topology: NodeTopology, hidden: Int, rows: Int, sharedNormedArray: Bool,
         timeout: Double) throws {
        self.communicator = communicator
        self.topology = topology
        self.timeout = timeout
        let bytes = Self.flagBytes + 2 * rows * hidden * MemoryLayout<Float>.stride
        // Local rank 0's segment also holds the shared array. Its pages are
        // first touched by the ranks that write each shard, so each shard
        // lands on its writer's NUMA node.
        let sharedBytes = sharedNormedArray ? rows * hidden * MemoryLayout<Float>.stride : 0
        let mine = bytes + (topology.localRank == 0 ? sharedBytes : 0)
        let size = topology.localSize, node = topology.nodeComm
        let (win, bases) = try communicator.thread.run { () throws -> (MPI_Win, [UnsafeMutableRawPointer]) in
            var base: UnsafeMutableRawPointer? = nil
            var win: MPI_Win? = nil
            // Non-contiguous: each segment is allocated (and placed) by its own rank.
            var info: MPI_Info? = nil
            MPI_Info_create(&info)
            MPI_Info_set(info, "alloc_shared_noncontig", "true")
            try check(MPI_Win_allocate_shared(MPI_Aint(mine), 1, info, node, &base, &win), "MPI_Win_allocate_shared")
            MPI_Info_free(&info)
            var bases: [UnsafeMutableRawPointer] = []
            for peer in 0..<size {
                var segmentSize: MPI_Aint = 0, unit: Int32 = 0
                var peerBase: UnsafeMutableRawPointer? = nil
                try check(MPI_Win_shared_query(win, Int32(peer), &segmentSize, &unit, &peerBase), "MPI_Win_shared_query")
                bases.append(peerBase!)
            }
            return (win!, bases)
        }
        window = win
        // First touch of our own segment by this rank (NUMA placement), flags zeroed.
        memset(bases[topology.localRank], 0, bytes)
        for flag in [Flag.partialsReady, .rowsNormalized] {
            flags[flag] = bases.map { ($0 + flag.rawValue).assumingMemoryBound(to: UInt64.self) }
        }
        partials = bases.map { ($0 + Self.flagBytes).assumingMemoryBound(to: Float.self) }
        normedBlocks = partials.map { $0 + rows * hidden }
        if sharedNormedArray { sharedNormed = (bases[0] + bytes).assumingMemoryBound(to: Float.self) }
        // Everyone has zeroed its flags before anyone uses them.
        try communicator.barrier()
    }

    deinit { release() }

    /// Frees the window (collective over the node). With a failed peer
    /// `MPI_Win_free` would never return, so the window is then abandoned.
    func release() {
        guard window != nil else { return }
        guard !Communicator.hasPeerFailure else { window = nil; return }
        var win = window
        _ = try? communicator.thread.run { MPI_Win_free(&win) }
        window = nil
    }

    /// Raises this rank's `flag` to `epoch`.
    func raise(_ flag: Flag, epoch: UInt64) {
        weft_flag_publish(flags[flag]![topology.localRank], epoch)
    }

    /// The first local peer whose `flag` is still below `epoch`, or nil (never blocks).
    func peerBehind(_ flag: Flag, epoch: UInt64) -> Int? {
        var list = flags[flag]!.map { Optional($0) }
        let behind = weft_flags_behind(&list, Int32(topology.localSize), Int32(topology.localRank), epoch)
        return behind < 0 ? nil : Int(behind)
    }

    /// Blocks until every local peer raised `flag` to `epoch`; after `timeout`
    /// seconds throws the peer timeout naming the (world) rank still behind.
    func wait(_ flag: Flag, epoch: UInt64, what: String) throws {
        var list = flags[flag]!.map { Optional($0) }
        let behind = weft_flags_wait(&list, Int32(topology.localSize), Int32(topology.localRank), epoch, timeout)
        if behind >= 0 { throw CommError.peerTimeout(rank: topology.nodeRanks[Int(behind)], seconds: timeout, collective: what) }
    }
}
