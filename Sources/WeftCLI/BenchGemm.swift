import ArgumentParser
import CKernels
import Foundation
import WeftRuntime
import WeftTensor

/// Linear-layer kernels per weight format and row count: GFLOP/s and weight
/// bytes per second of weft_wgemm (and of the float32 packed GEMM), next to a
/// plain read loop over the same bytes measured in the same run.
struct BenchGemm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "weft_wgemm per weight format and row count: GFLOP/s, weight GB/s and the share of the read bandwidth.")

    @Option(name: .customShort("n"), help: "Output features (weight rows).")
    var n: Int = 2048

    @Option(name: .customShort("k"), help: "Input features (weight columns; a multiple of each format's block).")
    var k: Int = 2048

    @Option(help: "Compute threads (default: one per CPU of this process).")
    var threads: Int?

    @Option(help: "Formats, comma-separated: f32 (the packed float32 GEMM), f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k.")
    var formats: String = "f32,f16,bf16,q8_0,q4_0,q4_1,q4_k,q5_k,q6_k"

    @Option(help: "Activation row counts, comma-separated.")
    var rows: String = "1,4,16,64,512"

    @Option(name: .customShort("r"), help: "Timed repetitions per cell (after one warm-up); the median is reported.")
    var repetitions: Int = 7

    @Option(help: "weft_wgemm path: auto (its own choice), dot or panel.")
    var path: String = "auto"

    @Option(help: "MiB of weight copies cycled through, so that the weights come from memory, not from the last-level cache (0: one copy).")
    var memory: Int = 256

    @Flag(help: "Print JSON rows instead of a table.")
    var json = false

    static let formatTypes: [(String, Int32)] = [
        ("f32", 0), ("f16", 1), ("bf16", 30), ("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("q4_k", 12), ("q5_k", 13), ("q6_k", 14),
    ]

    func parsedFormats() throws -> [(String, Int32)] {
        try formats.split(separator: ",").map { part in
            let name = part.trimmingCharacters(in: .whitespaces).lowercased()
            guard let entry = Self.formatTypes.first(where: { $0.0 == name }) else {
                throw ValidationError("--formats: unknown format \"\(name)\" (expected \(Self.formatTypes.map(\.0).joined(separator: ", ")))")
            }
            return entry
        }
    }

    func parsedRows() throws -> [Int] {
        try rows.split(separator: ",").map { part in
            guard let m = Int(part.trimmingCharacters(in: .whitespaces)), m >= 1 else {
                throw ValidationError("--rows: \"\(part)\" is not a positive row count")
            }
            return m
        }
    }

    func pathValue() throws -> Int32 {
        switch path {
        case "auto": return Int32(WEFT_WGEMM_AUTO.rawValue)
        case "dot": return Int32(WEFT_WGEMM_DOT.rawValue)
        case "panel": return Int32(WEFT_WGEMM_PANEL.rawValue)
        default: throw ValidationError("--path must be auto, dot or panel, got \(path)")
        }
    }

    func validate() throws {
        _ = try parsedFormats()
        _ = try parsedRows()
        _ = try pathValue()
        guard n >= 1, k >= 1 else { throw ValidationError("-n and -k must be at least 1") }
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1, got \(repetitions)") }
        guard memory >= 0 else { throw ValidationError("--memory must be >= 0, got \(memory)") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    struct Row: Encodable {
        let format: String
        let rows: Int
        let path: String
        let n: Int
        let k: Int
        let threads: Int
        let median_ms: Double
        let gflops: Double
        let weight_gb_per_s: Double
        let read_gb_per_s: Double
        let share_of_read: Double
    }

    /// 64-byte aligned, zeroed memory freed on deinit.
    final class Aligned {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
        init(bytes: Int) {
            self.bytes = bytes
            pointer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
            pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 64))
        }
        deinit { pointer.deallocate() }
    }

    /// One copy of an n x k weight in `type` (float32: packed panels) from a
    /// fixed pseudo-random pattern; formats without a quantizer here (the
    /// k-quants) get random blocks with small fp16 scales.
    func makeWeight(_ type: Int32) throws -> Aligned {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 11
        }
        func uniform() -> Float { Float(Double(next() % 2_000_001) / 1_000_000 - 1) }
        if type == 0 {
            let nr = Int(weft_gemm_nr())
            let out = Aligned(bytes: weft_gemm_packed_floats(Int32(n), Int32(k)) * 4)
            var panel = [Float](repeating: 0, count: nr * k)
            for p in 0..<((n + nr - 1) / nr) {
                let rowsHere = min(nr, n - p * nr)
                for i in 0..<(rowsHere * k) { panel[i] = uniform() }
                panel.withUnsafeBufferPointer {
                    weft_gemm_pack_panel($0.baseAddress, k, Int32(rowsHere), Int32(k),
                                         out.pointer.assumingMemoryBound(to: Float.self) + p * nr * k)
                }
            }
            return out
        }
        let rowBytes = weft_wtype_row_bytes(type, Int64(k))
        guard rowBytes > 0 else { throw ValidationError("-k \(k) is not a multiple of the block of format \(type)") }
        let out = Aligned(bytes: rowBytes * n)
        var row = [Float](repeating: 0, count: k)
        var quantized = true
        for j in 0..<n {
            for i in 0..<k { row[i] = uniform() }
            if weft_quantize_row(type, row, out.pointer + j * rowBytes, Int64(k)) != 0 { quantized = false; break }
        }
        if !quantized {
            let bytes = out.pointer.assumingMemoryBound(to: UInt8.self)
            for i in 0..<out.bytes { bytes[i] = UInt8(truncatingIfNeeded: next()) }
            let blockBytes = Int(weft_wtype_block_bytes(type))
            let scaleOffsets: [Int] = type == 14 ? [blockBytes - 2] : [0, 2]
            for b in 0..<(out.bytes / blockBytes) {
                for o in scaleOffsets {
                    let h = weft_fp32_to_fp16(Float(next() % 100 + 1) * 1e-3)
                    bytes[b * blockBytes + o] = UInt8(h & 0xff)
                    bytes[b * blockBytes + o + 1] = UInt8(h >> 8)
                }
            }
        }
        return out
    }

    func run() throws {
        let formatList = try parsedFormats(), rowCounts = try parsedRows(), pathKind = try pathValue()
        let pool = try ComputePool(threads: threads)
        let threadCount = pool.threadCount
        let maxRows = rowCounts.max()!
        var x = [Float](repeating: 0, count: maxRows * k)
        for i in x.indices { x[i] = Float((i &* 7919) % 2001) / 1000 - 1 }
        var y = [Float](repeating: 0, count: maxRows * n)
        var results: [Row] = []
        var skipped: [String] = []
        for (name, type) in formatList {
            if type != 0 && weft_wtype_supported(type) == 0 { skipped.append(name); continue }
            let first = try makeWeight(type)
            let copies = max(1, min(256, (memory << 20) / max(first.bytes, 1) + (memory > 0 ? 1 : 0)))
            var weights = [first]
            for _ in 1..<copies {
                let c = Aligned(bytes: first.bytes)
                c.pointer.copyMemory(from: first.pointer, byteCount: first.bytes)
                weights.append(c)
            }
            var turn = 0
            func nextWeight() -> Aligned { defer { turn = (turn + 1) % weights.count }; return weights[turn] }
            // The machine's limit: the same bytes, read once per repetition.
            var checksum: UInt64 = 0
            var readTimes: [Double] = []
            for r in 0...repetitions {
                let w = nextWeight()
                let start = DispatchTime.now().uptimeNanoseconds
                checksum &+= weft_wgemm_read_loop(w.pointer, w.bytes, pool.raw)
                if r > 0 { readTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }
            }
            let readGBs = Double(first.bytes) / median(readTimes) * 1e-9
            for m in rowCounts {
                let chosen: Int32 = type == 0 ? 0 : pathKind == 0 ? weft_wgemm_choose(type, Int32(m), Int32(n), Int32(k), Int32(threadCount)) : pathKind
                let scratchBytes = type == 0 ? 0 : pathKind == 0
                    ? weft_wgemm_scratch_bytes(type, Int32(m), Int32(n), Int32(k), Int32(threadCount))
                    : weft_wgemm_path_scratch_bytes(pathKind, type, Int32(m), Int32(n), Int32(k), Int32(threadCount))
                if type != 0 && scratchBytes == 0 { skipped.append("\(name) \(path) m=\(m)"); continue }
                let scratch = Aligned(bytes: scratchBytes)
                var times: [Double] = []
                for r in 0...repetitions {
                    let w = nextWeight()
                    let start = DispatchTime.now().uptimeNanoseconds
                    if type == 0 {
                        weft_op_linear(pool.raw, Int32(m), Int32(n), Int32(k), x, k,
                                       w.pointer.assumingMemoryBound(to: Float.self), &y, n)
                    } else {
                        let rc = weft_wgemm_path(pathKind, type, Int32(m), Int32(n), Int32(k), x, k, w.pointer, &y, n,
                                                 scratch.pointer, scratchBytes, pool.raw)
                        guard rc == 0 else { throw RuntimeError.invalidOption("--formats", "weft_wgemm refused \(name) m=\(m) n=\(n) k=\(k)") }
                    }
                    if r > 0 { times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }
                }
                let t = median(times)
                let weightGBs = Double(first.bytes) / t * 1e-9
                let pathName = type == 0 ? "packed" : chosen == Int32(WEFT_WGEMM_DOT.rawValue) ? "dot" : "panel"
                results.append(Row(format: name, rows: m, path: pathName, n: n, k: k, threads: threadCount,
                                   median_ms: t * 1e3, gflops: 2 * Double(m) * Double(n) * Double(k) / t * 1e-9,
                                   weight_gb_per_s: weightGBs, read_gb_per_s: readGBs, share_of_read: weightGBs / readGBs))
            }
            if checksum == 0x5eed { Output.write("") }  // keeps the read loop's result alive
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for row in results { Output.write(String(decoding: try encoder.encode(row), as: UTF8.self) + "\n") }
            return
        }
        Output.write("n = \(n), k = \(k), threads: \(threadCount), ISA: \(String(cString: weft_isa_name(weft_isa_current()))), "
            + "median of \(repetitions) after a warm-up, weights cycled over \(memory) MiB of copies\n\n")
        Output.write("| format | rows | path | ms | GFLOP/s | weight GB/s | read GB/s | of read |\n")
        Output.write("|---|---:|---|---:|---:|---:|---:|---:|\n")
        for r in results {
            Output.write(String(format: "| %@ | %d | %@ | %.3f | %.1f | %.1f | %.1f | %.2f |\n",
                                r.format, r.rows, r.path, r.median_ms, r.gflops, r.weight_gb_per_s, r.read_gb_per_s, r.share_of_read))
        }
        if !skipped.isEmpty { Output.write("\nskipped (not supported here): \(skipped.joined(separator: ", "))\n") }
    }
}
