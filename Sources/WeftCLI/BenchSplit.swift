import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime
import WeftSchedule

/// Checks the token-split cost model: for each prompt length, the cut the
/// planner picks and its decision, with predicted and measured times of each
/// half alone, of the unsplit fused pass, of the pass overlapped at the best
/// two-way cut and of what `auto` runs (fused or the planner's chunks). The
/// variants alternate within each repetition.
struct BenchSplit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "The planner's split per token count: predicted against measured times.")

    @OptionGroup var options: ModelOptions

    @Option(help: "Prompt lengths, comma-separated.")
    var tokens: String = "64,256,1024"

    @Option(name: .customShort("r"), help: "Timed runs per measurement (after one warm-up); the median is reported.")
    var repetitions: Int = 3

    @Flag(help: "Print JSON rows instead of a table.")
    var json = false

    func validate() throws {
        _ = try parseTokenList(tokens, option: "--tokens")
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1") }
    }

    struct Row: Encodable {
        let tokens: Int
        let decision: String
        let split: Int?
        /// Rows each routed expert gets on average (n·k/E), for a mixture-of-experts model.
        let tokens_per_expert: Double?
        let predicted_unsplit_ms: Double
        let measured_unsplit_ms: Double
        let predicted_overlap_ms: Double?
        let measured_overlap_ms: Double?
        /// What `auto` runs for this batch: "fused" or the cuts of its chunks.
        let auto_schedule: String
        let predicted_auto_ms: Double
        let measured_auto_ms: Double
        let predicted_a_ms: Double?
        let measured_a_ms: Double?
        let predicted_b_ms: Double?
        let measured_b_ms: Double?
    }

    func run() throws {
        Session.run { communicator in
            let counts = try parseTokenList(tokens, option: "--tokens")
            guard counts.allSatisfy({ $0 >= 2 }) else { throw RuntimeError.invalidOption("--tokens", "every token count must be at least 2 to be split") }
            var configuration = try options.engineConfiguration(maxSequenceLength: counts.max()!, mode: .overlap)
            configuration.maxSequences = 1
            let engine = try Engine(configuration: configuration, communicator: communicator)
            let planner = engine.planner!
            let v = engine.config.vocabularySize
            /// Seconds of running `pieces` (pieces of one sequence, in order), timing only the last.
            func run(_ pieces: [Range<Int>], schedule: Schedule) throws -> Double {
                var elapsed = 0.0
                for (i, piece) in pieces.enumerated() {
                    var batch = FlatBatch()
                    batch.append(sequence: 0, tokens: piece.map { Int32(($0 * 7919 + 11) % v) }, firstPosition: piece.lowerBound, logits: .last)
                    let seconds = try secondsAcrossRanks(communicator) { _ = try engine.runner.forward(batch, schedule: schedule) }
                    if i == pieces.count - 1 { elapsed = seconds * 1e3 }
                }
                engine.release(sequence: 0)
                return elapsed
            }
            /// Median ms of each variant; the variants alternate within every
            /// repetition (after one warm-up round), so drift hits them alike.
            func measure(_ variants: [(pieces: [Range<Int>], schedule: Schedule)]) throws -> [Double] {
                var times = [[Double]](repeating: [], count: variants.count)
                for repetition in 0...repetitions {
                    for (i, variant) in variants.enumerated() {
                        let ms = try run(variant.pieces, schedule: variant.schedule)
                        if repetition > 0 { times[i].append(ms) }
                    }
                }
                return times.map(median)
            }
            let experts = planner.shape.experts
            var rows: [Row] = []
            for count in counts {
                let positions = (0..<count).map { Int32($0) }
                let decision = planner.decide(positions: positions)
                let auto = planner.schedule(positions: positions)
                let a = planner.bestSplit(positions: positions)!
                let predictedAuto: Double
                switch decision {
                case .unsplit(let predicted): predictedAuto = predicted
                case .split(_, let predicted, _): predictedAuto = predicted
                }
                let m = try measure([([0..<count], .fused), ([0..<count], .overlap(Schedule.Cuts([a], rows: count))), ([0..<count], auto),
                                     ([0..<a], .fused), ([0..<a, a..<count], .fused)])
                let label: String
                if case .split = decision { label = "split" } else { label = "unsplit" }
                let autoLabel: String
                if case .overlap(let cuts) = auto { autoLabel = "overlap \(cuts)" } else { autoLabel = "fused" }
                rows.append(Row(tokens: count, decision: label, split: a,
                                tokens_per_expert: experts.map { Double(count * $0.perToken) / Double($0.count) },
                                predicted_unsplit_ms: planner.predictUnsplit(positions) * 1e3, measured_unsplit_ms: m[0],
                                predicted_overlap_ms: planner.predictSplit(positions, at: a) * 1e3, measured_overlap_ms: m[1],
                                auto_schedule: autoLabel, predicted_auto_ms: predictedAuto * 1e3, measured_auto_ms: m[2],
                                predicted_a_ms: planner.predictUnsplit(Array(positions[..<a])) * 1e3, measured_a_ms: m[3],
                                predicted_b_ms: planner.predictUnsplit(Array(positions[a...])) * 1e3, measured_b_ms: m[4]))
                if communicator.isRoot && !json { FileHandle.standardError.write(Data("measured \(count) tokens\n".utf8)) }
            }
            guard communicator.isRoot else { return }
            if json { Output.write(try jsonString(rows) + "\n"); return }
            func f(_ x: Double?) -> String { x.map { String(format: "%.1f", $0) } ?? "–" }
            let c = planner.costs
            Output.write(String(format: "costs (rank 0): GEMM %.1f GFLOP/s, weights %.1f GB/s, attention %.2f G pairs/s, collective %.0f µs + %.3f µs/row, overlaps compute: %@\n",
                                c.gemmFlopsPerSecond / 1e9, c.weightBytesPerSecond / 1e9, c.attentionPairsPerSecond / 1e9,
                                c.collectiveLatency * 1e6, c.collectiveSecondsPerRow * 1e6, c.collectiveOverlapsCompute ? "yes" : "no"))
            if let experts {
                Output.write("experts: \(experts.count), \(experts.perToken) per token, \(experts.held) held on rank 0, \(experts.weightsPerExpert) weights each; \(experts.layers) of \(planner.shape.layerCount) layers sparse\n\n")
            }
            Output.write("| tokens | tokens/expert | decision | cut | unsplit ms (pred / meas) | overlap ms (pred / meas) | auto | auto ms (pred / meas) | auto / unsplit (meas) | half A ms (pred / meas) | half B ms (pred / meas) |\n|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|\n")
            for r in rows {
                Output.write("| \(r.tokens) | \(f(r.tokens_per_expert)) | \(r.decision) | \(r.split.map(String.init) ?? "–") | \(f(r.predicted_unsplit_ms)) / \(f(r.measured_unsplit_ms)) | \(f(r.predicted_overlap_ms)) / \(f(r.measured_overlap_ms)) | \(r.auto_schedule) | \(f(r.predicted_auto_ms)) / \(f(r.measured_auto_ms)) | \(String(format: "%.3f", r.measured_auto_ms / r.measured_unsplit_ms)) | \(f(r.predicted_a_ms)) / \(f(r.measured_a_ms)) | \(f(r.predicted_b_ms)) / \(f(r.measured_b_ms)) |\n")
            }
        }
    }
}
