import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime
import WeftSchedule

/// Checks the token-split cost model: for each prompt length, the cut the
/// planner picks and its decision, with predicted and measured times of each
/// half alone, of the unsplit fused pass and of the overlapped pass.
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
        let predicted_unsplit_ms: Double
        let measured_unsplit_ms: Double
        let predicted_overlap_ms: Double?
        let measured_overlap_ms: Double?
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
            /// Median ms of running `spans` (pieces of one sequence, in order), timing only the last.
            func measure(_ pieces: [Range<Int>], schedule: Schedule) throws -> Double {
                var times: [Double] = []
                for repetition in 0...repetitions {
                    var elapsed = 0.0
                    for (i, piece) in pieces.enumerated() {
                        var batch = FlatBatch()
                        batch.append(sequence: 0, tokens: piece.map { Int32(($0 * 7919 + 11) % v) }, firstPosition: piece.lowerBound, logits: .last)
                        let seconds = try secondsAcrossRanks(communicator) { _ = try engine.runner.forward(batch, schedule: schedule) }
                        if i == pieces.count - 1 { elapsed = seconds * 1e3 }
                    }
                    engine.release(sequence: 0)
                    if repetition > 0 { times.append(elapsed) }
                }
                return median(times)
            }
            var rows: [Row] = []
            for count in counts {
                let positions = (0..<count).map { Int32($0) }
                let decision = planner.decide(positions: positions)
                let a = planner.bestSplit(positions: positions)!
                let unsplit = try measure([0..<count], schedule: .fused)
                let overlap = try measure([0..<count], schedule: .overlap(Schedule.Cuts([a], rows: count)))
                let halfA = try measure([0..<a], schedule: .fused)
                let halfB = try measure([0..<a, a..<count], schedule: .fused)
                let label: String
                if case .split = decision { label = "split" } else { label = "unsplit" }
                rows.append(Row(tokens: count, decision: label, split: a,
                                predicted_unsplit_ms: planner.predictUnsplit(positions) * 1e3, measured_unsplit_ms: unsplit,
                                predicted_overlap_ms: planner.predictSplit(positions, at: a) * 1e3, measured_overlap_ms: overlap,
                                predicted_a_ms: planner.predictUnsplit(Array(positions[..<a])) * 1e3, measured_a_ms: halfA,
                                predicted_b_ms: planner.predictUnsplit(Array(positions[a...])) * 1e3, measured_b_ms: halfB))
                if communicator.isRoot && !json { FileHandle.standardError.write(Data("measured \(count) tokens\n".utf8)) }
            }
            guard communicator.isRoot else { return }
            if json { Output.write(try jsonString(rows) + "\n"); return }
            func f(_ x: Double?) -> String { x.map { String(format: "%.1f", $0) } ?? "–" }
            Output.write("| tokens | decision | cut | unsplit ms (pred / meas) | overlap ms (pred / meas) | half A ms (pred / meas) | half B ms (pred / meas) |\n|---:|---|---:|---:|---:|---:|---:|\n")
            for r in rows {
                Output.write("| \(r.tokens) | \(r.decision) | \(r.split.map(String.init) ?? "–") | \(f(r.predicted_unsplit_ms)) / \(f(r.measured_unsplit_ms)) | \(f(r.predicted_overlap_ms)) / \(f(r.measured_overlap_ms)) | \(f(r.predicted_a_ms)) / \(f(r.measured_a_ms)) | \(f(r.predicted_b_ms)) / \(f(r.measured_b_ms)) |\n")
            }
        }
    }
}
