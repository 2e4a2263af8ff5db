import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime
@_spi(Benchmarks) import WeftSchedule

/// TokenWeave's main figure: prefill latency per token count and
/// communication mode, speedup against baseline, and the share of the
/// baseline's communication that overlap hides.
struct BenchPrefill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill",
        abstract: "Prefill latency per token count and communication mode (baseline, fused, overlap, auto, nocomm).")

    @OptionGroup var options: ModelOptions

    @Option(help: "Prompt lengths, comma-separated.")
    var tokens: String = "1024,2048"

    @Option(help: "Modes, comma-separated: baseline, fused, overlap, auto, nocomm (nocomm skips the reductions: a timing ideal).")
    var modes: String = "baseline,fused,overlap,nocomm"

    @Option(name: .customShort("r"), help: "Timed runs per point (after the warm-ups); the median is reported.")
    var repetitions: Int = 3

    @Option(help: "Untimed warm-up runs per point before the timed ones (0 for long prompts, where one run takes minutes).")
    var warmups: Int = 1

    @Flag(help: "Print JSON rows instead of a table.")
    var json = false

    @Option(help: "Also write the latency-against-tokens chart (one line per mode) to this SVG file.")
    var plot: String?

    @Option(help: "overlap mode: cut into this many chunks (2…16, the planner's cuts for that count) instead of the planner's choice of 2…4.")
    var chunks: Int?

    @Option(help: "After the timed runs of each point, run it once more traced and write every rank's compute, wait and comm-thread spans to this Chrome trace (JSON: chrome://tracing or ui.perfetto.dev); a per-rank summary is printed too.")
    var trace: String?

    /// A measured mode: one the engine resolves per batch, or the pass with
    /// its reductions skipped (the compute-only ideal, which only a benchmark
    /// may run).
    enum Mode: Hashable {
        case engine(CommMode)
        case nocomm

        init?(name: String) {
            if name == "nocomm" { self = .nocomm; return }
            guard let mode = CommMode(rawValue: name) else { return nil }
            self = .engine(mode)
        }

        var name: String {
            switch self {
            case .engine(let mode): return mode.rawValue
            case .nocomm: return "nocomm"
            }
        }
    }

    func parsedModes() throws -> [Mode] {
        try modes.split(separator: ",").map { name in
            guard let mode = Mode(name: String(name)) else {
                throw ValidationError("--modes: unknown mode \"\(name)\" (baseline, fused, overlap, auto, nocomm)")
            }
            return mode
        }
    }

    func validate() throws {
        _ = try parsedModes()
        _ = try parseTokenList(tokens, option: "--tokens")
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1") }
        guard (0...100).contains(warmups) else { throw ValidationError("--warmups must be 0...100, got \(warmups)") }
        if let chunks, !(2...16).contains(chunks) { throw ValidationError("--chunks must be 2...16, got \(chunks)") }
        if let trace {
            let folder = URL(fileURLWithPath: trace).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: folder) else {
                throw ValidationError("--trace: cannot write into \(folder)")
            }
        }
    }

    struct Row: Encodable {
        let tokens: Int
        let mode: String
        /// The first cut (the split of two halves) and every cut.
        let split: Int?
        let cuts: [Int]?
        let median_ms: Double
        let speedup_vs_baseline: Double?
        let overlap_efficiency: Double?
        /// Mixture-of-experts models: routed tokens per expert and rank in the
        /// timed runs, and their imbalance under the placement used.
        let moe: BenchEndToEnd.MoELoad?
    }

    /// One traced run: every rank's spans.
    struct TracedRun {
        let tokens: Int
        let mode: String
        let cuts: [Int]?
        let ranks: [[TraceRecorder.Span]]
    }

    func run() throws {
        Session.run { communicator in
            let counts = try parseTokenList(tokens, option: "--tokens"), modes = try parsedModes()
            guard counts.allSatisfy({ $0 >= communicator.size }) else {
                throw RuntimeError.invalidOption("--tokens", "every token count must be at least the number of ranks (\(communicator.size))")
            }
            var configuration = try options.engineConfiguration(maxSequenceLength: counts.max()!, mode: .overlap)
            configuration.maxSequences = 1
            let engine = try Engine(configuration: configuration, communicator: communicator)
            var rows: [Row] = []
            var traced: [TracedRun] = []
            for count in counts {
                var medians: [Mode: Double] = [:]
                for mode in modes {
                    var batch = FlatBatch()
                    batch.append(sequence: 0, tokens: (0..<count).map { Int32(($0 * 7919 + 11) % engine.config.vocabularySize) },
                                 firstPosition: 0, logits: .last)
                    // The engine's resolution, except the bench's own: the
                    // skipped reductions, and --chunks' forced chunk count.
                    let resolved: Schedule?
                    switch mode {
                    case .nocomm: resolved = .skipReductions(BenchmarkOnly())
                    case .engine(.overlap) where chunks != nil:
                        resolved = engine.planner!.overlapSchedule(positions: batch.positions, chunks: chunks)
                    case .engine(let engineMode): resolved = engineMode.schedule(for: batch.positions, planner: engine.planner)
                    }
                    guard let schedule = resolved else {
                        throw RuntimeError.invalidOption("--tokens", "\(count) tokens are too few to cut into \(chunks ?? 2) chunks")
                    }
                    var cuts: [Int]?
                    if case .overlap(let chosen) = schedule { cuts = chosen.cuts }
                    var times: [Double] = []
                    var loads: [ExpertLoad] = []
                    _ = engine.model.takeExpertLoad()
                    for repetition in 0..<(warmups + repetitions) {
                        if communicator.isRoot && !json {
                            FileHandle.standardError.write(Data("\r\(count) tokens \(mode.name): run \(repetition + 1)/\(warmups + repetitions)…".utf8))
                        }
                        let seconds = try secondsAcrossRanks(communicator) { _ = try engine.runner.forward(batch, schedule: schedule) }
                        let load = engine.model.takeExpertLoad()
                        engine.release(sequence: 0)
                        if repetition >= warmups {
                            times.append(seconds * 1e3)
                            if let load { loads.append(load) }
                        }
                    }
                    if trace != nil {
                        let recorder = TraceRecorder()
                        try communicator.barrier()
                        recorder.restart()
                        engine.runner.trace = recorder
                        defer { engine.runner.trace = nil }
                        _ = try engine.runner.forward(batch, schedule: schedule)
                        engine.release(sequence: 0)
                        let gathered = try communicator.gatherBytes(Array(try JSONEncoder().encode(recorder.recorded)))
                        if communicator.isRoot {
                            traced.append(TracedRun(tokens: count, mode: mode.name, cuts: cuts,
                                                    ranks: try gathered.map { try JSONDecoder().decode([TraceRecorder.Span].self, from: Data($0)) }))
                        }
                    }
                    let median = median(times)
                    medians[mode] = median
                    if communicator.isRoot && !json {
                        FileHandle.standardError.write(Data("\r\(count) tokens \(mode.name): \(String(format: "%.1f", median)) ms      \n".utf8))
                    }
                    // (Without the reductions each rank routes its own partial
                    // sums, so rank 0's count describes only rank 0: not shown.)
                    let moe = engine.config.moe == nil || mode == .nocomm ? nil
                        : BenchEndToEnd.MoELoad(loads, size: communicator.size, placement: engine.model.plan.moePlacement)
                    rows.append(Row(tokens: count, mode: mode.name, split: cuts?.first, cuts: cuts, median_ms: median, speedup_vs_baseline: nil,
                                    overlap_efficiency: nil, moe: moe))
                }
                // Fill in ratios now that every mode of this count is measured.
                let baseline = medians[.engine(.baseline)], nocomm = medians[.nocomm]
                for i in rows.indices where rows[i].tokens == count {
                    let m = rows[i].median_ms
                    var efficiency: Double?
                    if let baseline, let nocomm, baseline > nocomm, rows[i].mode == "overlap" || rows[i].mode == "auto" || rows[i].mode == "fused" {
                        efficiency = (baseline - m) / (baseline - nocomm)
                    }
                    rows[i] = Row(tokens: count, mode: rows[i].mode, split: rows[i].split, cuts: rows[i].cuts, median_ms: m,
                                  speedup_vs_baseline: baseline.map { $0 / m }, overlap_efficiency: efficiency, moe: rows[i].moe)
                }
            }
            guard communicator.isRoot else { return }
            if let plot {
                let chart = SVGPlot(title: "Prefill latency per mode (\(communicator.size) ranks)", xLabel: "prompt tokens",
                                    yLabel: "median latency (ms)",
                                    series: modes.map { mode in
                                        (mode.name, rows.filter { $0.mode == mode.name }.map { (Double($0.tokens), $0.median_ms) })
                                    })
                do { try chart.render().write(toFile: plot, atomically: true, encoding: .utf8) } catch {
                    throw RuntimeError.invalidOption("--plot", "cannot write \(plot): \(error.localizedDescription)")
                }
            }
            if let trace { try writeTrace(traced, to: trace) }
            if json { Output.write(try jsonString(rows) + "\n"); return }
            let experts = engine.config.moe != nil
            if experts {
                Output.write("Experts placed \(engine.model.plan.moePlacement.rawValue) over \(communicator.size) ranks; routed tokens per rank (one per token, chosen expert and sparse layer, one timed run) and their imbalance (per sparse-layer pass the busiest rank, summed, over the mean rank's sum).\n\n")
            }
            Output.write("| tokens | mode | cuts | median ms | speedup vs baseline | share of baseline comm hidden |\(experts ? " routed tokens per rank | MoE imbalance |" : "")\n|---:|---|---:|---:|---:|---:|\(experts ? "---|---:|" : "")\n")
            for r in rows {
                var line = "| \(r.tokens) | \(r.mode) | \(r.cuts.map { $0.map(String.init).joined(separator: ",") } ?? "–") | \(String(format: "%.1f", r.median_ms)) | \(r.speedup_vs_baseline.map { String(format: "%.2f×", $0) } ?? "–") | \(r.overlap_efficiency.map { String(format: "%.2f", $0) } ?? "–") |"
                if let moe = r.moe {
                    let perRun = moe.routed_tokens_per_rank.map { String($0 / max(moe.steps, 1)) }.joined(separator: " / ")
                    line += " \(perRun) | \(String(format: "%.3f", moe.load_imbalance)) |"
                } else if experts {
                    line += " – | – |"
                }
                Output.write(line + "\n")
            }
            if !traced.isEmpty {
                Output.write("\nTraced runs (one per point), per rank: time computing, waiting for reductions (exposed communication), the comm thread busy, bytes sent.\n\n")
                Output.write("| tokens | mode | rank | total ms | compute ms | waiting ms | comm busy ms | MB sent |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
                for run in traced {
                    for (rank, spans) in run.ranks.enumerated() {
                        let totals = TraceRecorder.totals(spans)
                        let end = spans.map { $0.start + $0.duration }.max() ?? 0
                        Output.write("| \(run.tokens) | \(run.mode) | \(rank) | \(String(format: "%.1f", end / 1e3)) | \(String(format: "%.1f", totals.compute / 1e3)) | \(String(format: "%.1f", totals.wait / 1e3)) | \(String(format: "%.1f", totals.comm / 1e3)) | \(String(format: "%.2f", Double(totals.bytes) / 1e6)) |\n")
                    }
                }
            }
        }
    }
}

extension BenchPrefill {
    /// Chrome trace event format: one process per (run, rank), one thread per lane.
    func writeTrace(_ runs: [TracedRun], to path: String) throws {
        var events: [[String: Any]] = []
        for (runIndex, run) in runs.enumerated() {
            for (rank, spans) in run.ranks.enumerated() {
                let pid = runIndex * run.ranks.count + rank
                let label = "\(run.tokens) tokens \(run.mode)\(run.cuts.map { " (cuts \($0.map(String.init).joined(separator: ",")))" } ?? "") · rank \(rank)"
                events.append(["name": "process_name", "ph": "M", "pid": pid, "args": ["name": label]])
                events.append(["name": "process_sort_index", "ph": "M", "pid": pid, "args": ["sort_index": pid]])
                for lane in TraceRecorder.Lane.allCases {
                    events.append(["name": "thread_name", "ph": "M", "pid": pid, "tid": lane.rawValue, "args": ["name": lane.name]])
                }
                for span in spans {
                    var event: [String: Any] = ["name": span.name, "ph": "X", "pid": pid, "tid": span.lane,
                                                "ts": span.start, "dur": span.duration]
                    if let bytes = span.bytes { event["args"] = ["bytes": bytes] }
                    events.append(event)
                }
            }
        }
        let data = try JSONSerialization.data(withJSONObject: ["traceEvents": events, "displayTimeUnit": "ms"], options: [.sortedKeys])
        do { try data.write(to: URL(fileURLWithPath: path)) } catch {
            throw RuntimeError.invalidOption("--trace", "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
