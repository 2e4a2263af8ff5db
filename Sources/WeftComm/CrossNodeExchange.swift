import CKernels
import CMPI
import Foundation
import WeftTensor

/// The number format of the fused collective's transfers between nodes.
///
/// Partial sums are converted to it for the wire and summed in float32 on
/// arrival; the residual stream stays float32. The normalized rows travel in it
/// too, and every rank (the one that normalized them included) uses the values
/// as they arrive, so all ranks compute with identical inputs.
public enum WireFormat: String, Sendable, CaseIterable {
    /// Exact: 4 bytes per value.
    case f32
    /// bfloat16, round to nearest even: float32's range, 8 significant bits.
    case bf16
    /// IEEE half, round to nearest even: 11 significant bits, but magnitudes
    /// above 65504 become infinite.
    case fp16
    /// ggml's Q8_0 blocks (as distributed-llama's Q80 sync): per 32 values of a
    /// row one fp16 scale d = max|x| / 127 and 32 int8 q = round(x / d), 34
    /// bytes (1.0625 per value). The error of a value is at most d / 2, i.e.
    /// relative to its block's largest magnitude (≤ 2^-8), not to itself. A
    /// row's last block is padded with zeros when the width is not a multiple
    /// of 32; a block holding NaN or ±inf arrives as 32 NaNs, and blocks with
    /// a magnitude of 8.3e6 or more overflow the fp16 scale (weft_wire.h).
    case q8_0

    /// Bytes of one row of `width` values on the wire.
    public func rowBytes(width: Int) -> Int {
        switch self {
        case .f32: width * 4
        case .bf16, .fp16: width * 2
        case .q8_0: weft_wire_q8_0_row_bytes(width)
        }
    }

    /// `rows` rows of `width` float32 values → wire (a copy for f32).
    func encode(_ source: UnsafePointer<Float>, into destination: UnsafeMutableRawPointer, rows: Int, width: Int) {
        let count = rows * width
        switch self {
        case .f32: destination.copyMemory(from: source, byteCount: count * 4)
        case .bf16: weft_f32_to_bf16(source, destination.assumingMemoryBound(to: UInt16.self), count)
        case .fp16: weft_f32_to_f16(source, destination.assumingMemoryBound(to: UInt16.self), count)
        case .q8_0: weft_wire_q8_0_encode(source, destination, rows, width)
        }
    }

    /// wire → float32.
    func decode(_ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        let count = rows * width
        switch self {
        case .f32: UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
        case .bf16: weft_bf16_to_f32(source.assumingMemoryBound(to: UInt16.self), destination, count)
        case .fp16: weft_f16_to_f32(source.assumingMemoryBound(to: UInt16.self), destination, count)
        case .q8_0: weft_wire_q8_0_decode(source, destination, rows, width)
        }
    }
}

/// The between-nodes part of the fused collective over `parts` ranks of
/// `comm` (one per node): a pairwise reduce-scatter, the fused residual +
/// RMSNorm of this rank's block, and an all-gather of the normalized blocks.
///
/// The reduce-scatter is point to point: each rank sends block p of its
/// partial rows straight to rank p and receives every peer's partial of its own
/// block, all at once. That moves (parts−1)/parts of the rows out of and into
/// each rank concurrently, the least any reduce-scatter can. (Open MPI 4's
/// nonblocking `MPI_Ireduce_scatter_block`, libnbc's, reduces everything to
/// rank 0 over a binomial tree and then scatters: with two ranks one whole
/// buffer crosses one way and then half of it back, three times as long on a
/// full-duplex link.) Partials are summed in rank order, own partial at its
/// own index, as the shared-memory kernel does: with `f32` on the wire the
/// result equals the shared-memory transport's bit for bit.
///
/// Calls follow a polled state machine on the comm thread: `startReduceScatter`,
/// then `reduceScatterDone` until true, `normalizeAndStartGather`, then
/// `gatherDone` until true, then `finishGather`.
final class CrossNodeExchange {
    let parts: Int
    let index: Int
    let hidden: Int
    let comm: MPI_Comm
    let wire: WireFormat
    /// Tag of the reduce-scatter's messages (the all-gather is a collective).
    static let tag: Int32 = 0x5745

    private(set) var capacity = 0
    private var blockCapacity = 0
    /// Bytes of one row on the wire.
    let rowBytes: Int
    // send / receive / shardWire / gathered hold wire bytes (sized in floats,
    // rounded up); peers and shard hold float32 rows.
    private var send: FloatBuffer?, receive: FloatBuffer?, peers: FloatBuffer?
    private var shard: FloatBuffer?, shardWire: FloatBuffer?, gathered: FloatBuffer?
    private var requests: [MPI_Request?] = []
    private var gatherRequest: MPI_Request? = CMPI_REQUEST_NULL()

    init(parts: Int, index: Int, hidden: Int, comm: MPI_Comm, wire: WireFormat) {
        self.parts = parts
        self.index = index
        self.hidden = hidden
        self.comm = comm
        self.wire = wire
        self.rowBytes = wire.rowBytes(width: hidden)
    }

    /// A FloatBuffer of at least `bytes` bytes.
    private static func bytesBuffer(_ bytes: Int) -> FloatBuffer { FloatBuffer(count: (bytes + 3) / 4) }

    /// Room for ranges of up to `rows` rows.
    func reserve(rows: Int) {
        guard rows > capacity else { return }
        let block = (rows + parts - 1) / parts, h = hidden
        // float32 needs no encoded copies: it sends the partials and the
        // normalized shard as they are.
        let narrow = wire != .f32
        send = narrow ? Self.bytesBuffer(parts * block * rowBytes) : nil
        receive = Self.bytesBuffer(parts * block * rowBytes)
        peers = narrow ? FloatBuffer(count: parts * block * h) : nil
        shard = FloatBuffer(count: block * h)
        shardWire = narrow ? Self.bytesBuffer(block * rowBytes) : nil
        gathered = Self.bytesBuffer(parts * block * rowBytes)
        capacity = rows
        blockCapacity = block
    }

    /// Rank p's block of `rows`: ⌈count/parts⌉ rows each, the last ones shorter.
    func block(_ rows: Range<Int>, _ p: Int) -> Range<Int> { FusedResidualNorm.block(rows, parts: parts, index: p) }

    enum Phase { case reduceScatter, allGather }

    /// Bytes this rank sends in one phase for a range of `rows` rows, for traces.
    func bytesSent(rows: Range<Int>, phase: Phase) -> Int {
        switch phase {
        case .reduceScatter: (rows.count - block(rows, index).count) * rowBytes
        case .allGather: (parts - 1) * ((rows.count + parts - 1) / parts) * rowBytes
        }
    }

    /// An MPI count of `rows` rows in bytes (messages travel as MPI_BYTE).
    private func byteCount(rows: Int) throws -> Int32 {
        let bytes = rows * rowBytes
        guard let count = Int32(exactly: bytes) else {
            throw CommError.unsupported("a message of \(rows) rows of \(hidden) values in \(wire.rawValue) is \(bytes) bytes, more than MPI's 2^31 - 1")
        }
        return count
    }

    /// Posts the receives of every peer's partial of this rank's block and the
    /// sends of each peer's block of `source` (row `rows.lowerBound` of the partials).
    func startReduceScatter(rows: Range<Int>, source: UnsafePointer<Float>) throws {
        precondition(rows.count <= capacity)
        let h = hidden
        let mine = block(rows, index)
        let slot = blockCapacity * rowBytes
        let receiveBase = UnsafeMutableRawPointer(receive!.pointer)
        requests = []
        for p in 0..<parts where p != index {
            if !mine.isEmpty {
                var request: MPI_Request? = CMPI_REQUEST_NULL()
                try check(MPI_Irecv(receiveBase + p * slot, try byteCount(rows: mine.count), CMPI_BYTE(), Int32(p), Self.tag, comm, &request), "MPI_Irecv")
                requests.append(request)
            }
        }
        for step in 1..<parts {
            // Start with the next rank so that not every rank sends to rank 0 first.
            let p = (index + step) % parts
            let theirs = block(rows, p)
            guard !theirs.isEmpty else { continue }
            let from = source + (theirs.lowerBound - rows.lowerBound) * h
            let buffer: UnsafeRawPointer
            if let send {
                let staged = UnsafeMutableRawPointer(send.pointer) + p * slot
                wire.encode(from, into: staged, rows: theirs.count, width: h)
                buffer = UnsafeRawPointer(staged)
            } else {
                buffer = UnsafeRawPointer(from)
            }
            var request: MPI_Request? = CMPI_REQUEST_NULL()
            try check(MPI_Isend(buffer, try byteCount(rows: theirs.count), CMPI_BYTE(), Int32(p), Self.tag, comm, &request), "MPI_Isend")
            requests.append(request)
        }
    }

    /// Whether every message of the reduce-scatter has arrived (never blocks).
    func reduceScatterDone() throws -> Bool {
        guard !requests.isEmpty else { return true }
        var flag: Int32 = 0
        let count = Int32(requests.count)
        try requests.withUnsafeMutableBufferPointer { list in
            try check(MPI_Testall(count, list.baseAddress, &flag, CMPI_STATUSES_IGNORE()), "MPI_Testall")
        }
        return flag != 0
    }

    /// Sums the peers' partials of this rank's block with its own (in rank
    /// order), adds the residual, normalizes, and starts the all-gather of the
    /// normalized blocks. `residual` and `source` point at row 0 and row
    /// `rows.lowerBound` of their arrays.
    func normalizeAndStartGather(rows: Range<Int>, source: UnsafePointer<Float>, residual: UnsafeMutablePointer<Float>,
                                 weight: UnsafePointer<Float>, eps: Float) throws {
        let h = hidden
        let mine = block(rows, index)
        let blockRows = (rows.count + parts - 1) / parts
        let slot = blockCapacity * rowBytes
        if !mine.isEmpty {
            var sources: [UnsafePointer<Float>?] = []
            for p in 0..<parts {
                if p == index {
                    sources.append(source + (mine.lowerBound - rows.lowerBound) * h)
                } else if wire == .f32 {
                    sources.append(UnsafePointer((UnsafeMutableRawPointer(receive!.pointer) + p * slot).assumingMemoryBound(to: Float.self)))
                } else {
                    let floats = peers!.pointer + p * blockCapacity * h
                    wire.decode(UnsafeRawPointer(receive!.pointer) + p * slot, into: floats, rows: mine.count, width: h)
                    sources.append(UnsafePointer(floats))
                }
            }
            weft_reduce_add_rmsnorm(&sources, Int32(parts), h, residual + mine.lowerBound * h, h, weight,
                                    shard!.pointer, h, Int32(mine.count), Int32(h), eps)
            if let shardWire { wire.encode(shard!.pointer, into: UnsafeMutableRawPointer(shardWire.pointer), rows: mine.count, width: h) }
        }
        // Equal blocks for the all-gather: a short last block sends padding that is never read.
        let count = try byteCount(rows: blockRows)
        gatherRequest = CMPI_REQUEST_NULL()
        try check(MPI_Iallgather((shardWire ?? shard!).pointer, count, CMPI_BYTE(),
                                 gathered!.pointer, count, CMPI_BYTE(), comm, &gatherRequest), "MPI_Iallgather")
    }

    func gatherDone() throws -> Bool {
        var flag: Int32 = 0
        try check(MPI_Test(&gatherRequest, &flag, CMPI_STATUS_IGNORE()), "MPI_Test")
        return flag != 0
    }

    /// Writes every block's normalized rows to `destination` (row `rows.lowerBound`).
    func finishGather(rows: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        wire.decode(UnsafeRawPointer(gathered!.pointer), into: destination, rows: rows.count, width: hidden)
    }
}
