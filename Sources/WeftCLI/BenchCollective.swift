import ArgumentParser
import CKernels
import Foundation
import WeftComm
import WeftTensor

/// osu_allreduce-style: the fused AllReduce + residual + RMSNorm (shared
/// memory and MPI paths) against MPI_Allreduce followed by residual + RMSNorm
/// on every row, and against a plain copy of the same bytes.
struct BenchCollective: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collective",
        abstract: "Fused AllReduce+residual+RMSNorm against MPI_Allreduce + RMSNorm and memcpy, per message size.")

    @Option(help: "Message sizes (bytes of one rank's partial sums), e.g. 16K..64M (powers of 4) or 16K,1M,4M.")
    var sizes: String = "16K..64M"

    @Option(help: "Row width in floats (the model's hidden size).")
    var hidden: Int = 2048

    @Option(help: "Timed repetitions per size (after warm-up); the median is reported.")
    var repetitions: Int = 20

    @Option(help: "Compute threads per rank.")
    var threads: Int?

    @Flag(help: "Print JSON rows instead of a table.")
    var json = false

    func validate() throws {
        _ = try parseSizes()
        guard hidden > 0, repetitions > 0 else { throw ValidationError("--hidden and --repetitions must be positive") }
    }

    func parseSizes() throws -> [Int] {
        func bytes(_ text: Substring) throws -> Int {
            let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            var digits = text.uppercased()
            var scale = 1
            if let last = digits.last, let unit = units[last] { scale = unit; digits.removeLast() }
            guard let value = Int(digits), value > 0 else { throw ValidationError("--sizes: \"\(text)\" is not a size like 16K or 4M") }
            return value * scale
        }
        if sizes.contains("..") {
            let parts = sizes.components(separatedBy: "..")
            guard parts.count == 2 else { throw ValidationError("--sizes: expected LOW..HIGH, got \(sizes)") }
            let low = try bytes(Substring(parts[0])), high = try bytes(Substring(parts[1]))
            guard low <= high else { throw ValidationError("--sizes: \(parts[0]) is above \(parts[1])") }
            return Array(sequence(first: low) { $0 * 4 <= high ? $0 * 4 : nil })
        }
        return try sizes.split(separator: ",").map(bytes)
    }

    struct Row: Encodable {
        let bytes: Int
        let rows: Int
        let variant: String
        let median_us: Double
        let gb_per_s: Double
        let speedup_vs_allreduce: Double
    }

    func run() throws {
        Session.run { communicator in
            let sizes = try parseSizes()
            let pool = try ComputePool(threads: threads)
            let maxRows = sizes.map { max(1, $0 / (hidden * 4)) }.max()!
            let shm: FusedResidualNorm? = try communicator.agree {
                (try? communicator.nodeSize()) == communicator.size
                    ? try FusedResidualNorm(communicator: communicator, hidden: hidden, transport: .sharedMemory) : nil
            }
            let mpi = try FusedResidualNorm(communicator: communicator, hidden: hidden, transport: .mpi)
            try shm?.reserve(rows: maxRows)
            try mpi.reserve(rows: maxRows)
            let partial = FloatBuffer(count: maxRows * hidden), residual = FloatBuffer(count: maxRows * hidden, zeroed: true)
            let normed = FloatBuffer(count: maxRows * hidden), weight = FloatBuffer(count: hidden)
            weight.fill(1)
            for i in 0..<partial.count { partial[i] = Float(i % 97) * 0.01 }
            let copySource = FloatBuffer(count: maxRows * hidden), copyTarget = FloatBuffer(count: maxRows * hidden)
            copySource.fill(1)
            copyTarget.fill(0)

            func median(_ body: () throws -> Void) throws -> Double {
                for _ in 0..<3 { try body() }
                var times: [Double] = []
                for _ in 0..<repetitions {
                    try communicator.barrier()
                    let start = DispatchTime.now().uptimeNanoseconds
                    try body()
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e3)
                }
                // The slowest rank's median: a collective is as fast as its last rank.
                let mine = WeftCLI.median(times)
                return Double(try communicator.allReduceMax(Int(mine * 1000))) / 1000
            }

            var rows: [Row] = []
            for bytes in sizes {
                let n = max(1, bytes / (hidden * 4)), count = n * hidden, h = hidden
                let allreduce = try median {
                    partial.pointer.update(repeating: 0.5, count: count)
                    try communicator.allReduceSum(partial.pointer, count: count)
                    weft_op_add_rmsnorm(pool.raw, residual.pointer, h, partial.pointer, h, weight.pointer, normed.pointer, h, Int32(n), Int32(h), 1e-5)
                }
                var variants: [(String, Double)] = [("MPI_Allreduce + residual + RMSNorm", allreduce)]
                if let shm {
                    variants.append(("fused, shared memory", try median {
                        shm.partials.update(repeating: 0.5, count: count)
                        try shm.run(rows: 0..<n, residual: residual.pointer, weight: weight.pointer, eps: 1e-5, pool: pool)
                    }))
                }
                variants.append(("fused, MPI reduce-scatter + all-gather", try median {
                    mpi.partials.update(repeating: 0.5, count: count)
                    try mpi.run(rows: 0..<n, residual: residual.pointer, weight: weight.pointer, eps: 1e-5, pool: pool)
                }))
                variants.append(("memcpy of the same bytes", try median {
                    copyTarget.pointer.update(from: copySource.pointer, count: count)
                }))
                for (name, time) in variants {
                    rows.append(Row(bytes: n * hidden * 4, rows: n, variant: name, median_us: time,
                                    gb_per_s: Double(n * hidden * 4) / time / 1e3, speedup_vs_allreduce: allreduce / time))
                }
                if communicator.isRoot && !json {
                    FileHandle.standardError.write(Data("measured \(bytes) bytes\n".utf8))
                }
            }
            guard communicator.isRoot else { return }
            if json { Output.write(try jsonString(rows) + "\n"); return }
            Output.write("ranks: \(communicator.size), threads per rank: \(pool.threadCount), row width: \(hidden) floats; median of \(repetitions), slowest rank\n\n")
            Output.write("| bytes | rows | variant | median µs | GB/s | vs MPI_Allreduce+norm |\n|---:|---:|---|---:|---:|---:|\n")
            for r in rows {
                Output.write("| \(r.bytes) | \(r.rows) | \(r.variant) | \(String(format: "%.1f", r.median_us)) | \(String(format: "%.2f", r.gb_per_s)) | \(String(format: "%.2f×", r.speedup_vs_allreduce)) |\n")
            }
        }
    }
}
