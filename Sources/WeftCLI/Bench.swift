import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure Weft.",
        subcommands: [BenchEndToEnd.self, BenchCollective.self, BenchPrefill.self, BenchSplit.self, BenchGemm.self])
}

/// llama-bench's convention: prompt processing (pp) and text generation (tg)
/// throughput, mean ± standard deviation over repetitions.
struct BenchEndToEnd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "Prefill and decode throughput, in llama-bench's table format.")

    @OptionGroup var options: ModelOptions

    @Option(name: .customShort("p"), help: "Prompt tokens of the pp test (0 skips it).")
    var promptTokens: Int = 512

    @Option(name: .customShort("n"), help: "Generated tokens of the tg test (0 skips it).")
    var generatedTokens: Int = 128

    @Option(name: .customShort("d"), help: "Tokens already in the KV cache when each pp and tg test starts (llama-bench's -d), prefilled untimed.")
    var depth: Int = 0

    @Option(name: .customShort("r"), help: "Repetitions (after one warm-up).")
    var repetitions: Int = 5

    @Option(name: .customShort("o"), help: "Output format: md, json or csv.")
    var output: String = "md"

    func validate() throws {
        guard ["md", "json", "csv"].contains(output) else { throw ValidationError("-o must be md, json or csv, got \(output)") }
        guard repetitions >= 1 else { throw ValidationError("-r must be at least 1, got \(repetitions)") }
        guard promptTokens >= 0, generatedTokens >= 0, promptTokens + generatedTokens > 0 else {
            throw ValidationError("-p and -n must be >= 0 and not both 0")
        }
        // Bounds keep the sequence length far from overflow; the model's own
        // context limit is checked when the engine sizes its cache.
        guard (0...1 << 24).contains(depth), promptTokens <= 1 << 24, generatedTokens <= 1 << 24 else {
            throw ValidationError("-d, -p and -n must be at most \(1 << 24)")
        }
    }

    struct Row: Encodable {
        let model: String
        let size_bytes: Int
        let params: Int
        let backend: String
        let ranks: Int
        let threads: Int
        let test: String
        let tokens_per_second_mean: Double
        let tokens_per_second_stddev: Double
        let samples: [Double]
        /// Achieved matrix-multiply rate per compute thread (pp rows only),
        /// counting the parameters a token uses (`active_params`).
        let gflops_per_thread: Double?
        /// Parameters a token uses: all but the experts it was not routed to.
        let active_params: Int
        /// Mixture-of-experts models: `MoELoad` of the timed runs.
        let moe: MoELoad?
    }

    /// Routed tokens (one per token, chosen expert and sparse layer) in a
    /// test's timed runs, per expert and per rank under the placement used;
    /// the imbalance is each sparse-layer pass's busiest rank's routed tokens,
    /// summed, over the mean rank's sum (`ExpertLoad.imbalance`).
    struct MoELoad: Encodable {
        let placement: String
        let routed_tokens_per_expert: [Int]
        let routed_tokens_per_rank: [Int]
        /// Of the sums over the test's timed runs.
        let load_imbalance: Double
        /// The mean over the test's steps of each step's imbalance (a pp
        /// run is one step, a tg run one step per token).
        let step_load_imbalance_mean: Double
        let steps: Int

        init(_ steps: [ExpertLoad], size: Int, placement: TensorParallelPlan.MoEPlacement) {
            var total = ExpertLoad(expertCount: steps.first?.perExpert.count ?? 0)
            for step in steps { total.add(step) }
            self.placement = placement.rawValue
            routed_tokens_per_expert = total.perExpert
            routed_tokens_per_rank = total.perRank(size: size, placement: placement)
            load_imbalance = total.imbalance(size: size, placement: placement)
            step_load_imbalance_mean = steps.isEmpty ? 1 : steps.map { $0.imbalance(size: size, placement: placement) }.reduce(0, +) / Double(steps.count)
            self.steps = steps.count
        }
    }

    struct MemoryRow: Encodable {
        let rank: Int
        let peak_rss_mib: Double
        let weights_mib: Double
        let kv_cache_mib: Double
        let budget_mib: Double
    }

    struct Report: Encodable {
        let results: [Row]
        let memory: [MemoryRow]
    }

    func run() throws {
        Session.run { communicator in
            let length = depth + max(promptTokens, 1) + generatedTokens + 1
            let engine = try Engine(configuration: options.engineConfiguration(maxSequenceLength: length), communicator: communicator)
            let config = engine.config
            guard length <= config.maxPositionEmbeddings else {
                throw ValidationError("-d \(depth) + -p \(promptTokens) + -n \(generatedTokens) tokens exceed the model's context of \(config.maxPositionEmbeddings) (max_position_embeddings)")
            }
            var rows: [Row] = []
            let modelName = options.model.map { URL(fileURLWithPath: $0).lastPathComponent }
                ?? URL(fileURLWithPath: options.randomWeights!).deletingPathExtension().lastPathComponent
            let threads = engine.model.pool.threadCount
            // The model's bytes as held (summed over ranks: its formats, not float32).
            var held = [Float(engine.model.weights.byteCount) / 1_048_576]
            try held.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0.baseAddress!, count: 1) }
            let modelMiB = Double(held[0])
            let activeParameters = Self.activeParameterCount(config)
            let placement = engine.model.plan.moePlacement
            func moeLoad(_ steps: [ExpertLoad]) -> MoELoad? {
                config.moe == nil ? nil : MoELoad(steps, size: communicator.size, placement: placement)
            }
            func row(_ test: String, _ samples: [Double], gflops: Double?, moe: MoELoad?) -> Row {
                let mean = samples.reduce(0, +) / Double(samples.count)
                let variance = samples.count > 1 ? samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count - 1) : 0
                return Row(model: modelName, size_bytes: Int(modelMiB * 1_048_576), params: config.parameterCount,
                           backend: "CPU+MPI", ranks: communicator.size, threads: threads, test: test,
                           tokens_per_second_mean: mean, tokens_per_second_stddev: variance.squareRoot(),
                           samples: samples, gflops_per_thread: gflops, active_params: activeParameters, moe: moe)
            }
            /// A progress line on stderr (rank 0), rewritten in place.
            func progress(_ test: String, _ repetition: Int) {
                guard communicator.isRoot else { return }
                let label = repetition == 0 ? "warm-up" : "run \(repetition)/\(repetitions)"
                FileHandle.standardError.write(Data("\r\(test): \(label)   ".utf8))
                if test.hasPrefix("tg") && repetition == repetitions { FileHandle.standardError.write(Data("\n".utf8)) }
            }
            let prompt = (0..<max(promptTokens, 1)).map { ($0 * 7919 + 13) % config.vocabularySize }
            let suffix = depth > 0 ? " @ d\(depth)" : ""
            /// A new sequence with `depth` tokens in its KV cache (prefilled in
            /// chunks, untimed).
            func sequenceAtDepth() throws -> Int {
                let sequence = engine.newSequence()
                var position = 0
                while position < depth {
                    let count = min(512, depth - position)
                    var batch = FlatBatch()
                    batch.append(sequence: sequence, tokens: (position..<position + count).map { Int32(($0 * 104_729 + 7) % config.vocabularySize) },
                                 firstPosition: position, logits: .last)
                    _ = try engine.forwardLocal(batch)
                    position += count
                }
                return sequence
            }
            if promptTokens > 0 {
                var samples: [Double] = []
                var loads: [ExpertLoad] = []
                for repetition in 0...repetitions {
                    progress("pp\(promptTokens)\(suffix)", repetition)
                    let sequence = try sequenceAtDepth()
                    var batch = FlatBatch()
                    batch.append(sequence: sequence, tokens: prompt.map { Int32($0) }, firstPosition: depth, logits: .last)
                    _ = engine.model.takeExpertLoad()   // not the depth's prefill
                    let seconds = try secondsAcrossRanks(communicator) { _ = try engine.forwardLocal(batch) }
                    let load = engine.model.takeExpertLoad()
                    engine.release(sequence: sequence)
                    if repetition > 0 {  // first run warms up
                        samples.append(Double(promptTokens) / seconds)
                        if let load { loads.append(load) }
                    }
                }
                // Matrix-multiply work of a prefill on this rank: 2 flops per weight a token uses.
                let perToken = 2.0 * Double(activeParameters)
                rows.append(row("pp\(promptTokens)\(suffix)", samples, gflops: perToken / Double(communicator.size) * median(samples) / 1e9 / Double(threads),
                                moe: moeLoad(loads)))
            }
            if generatedTokens > 0 {
                var samples: [Double] = []
                var loads: [ExpertLoad] = []
                for repetition in 0...repetitions {
                    progress("tg\(generatedTokens)\(suffix)", repetition)
                    let sequence = try sequenceAtDepth()
                    var batch = FlatBatch()
                    batch.append(sequence: sequence, tokens: [Int32(prompt[0])], firstPosition: depth, logits: .last)
                    _ = try engine.forwardLocal(batch)
                    _ = engine.model.takeExpertLoad()
                    var stepLoads: [ExpertLoad] = []
                    stepLoads.reserveCapacity(generatedTokens)
                    let seconds = try secondsAcrossRanks(communicator) {
                        for step in 1...generatedTokens {
                            var decode = FlatBatch()
                            // The prompt's token stream, continued past its end (a
                            // mixture of experts routes by token: not one token over and over).
                            decode.append(sequence: sequence, tokens: [Int32((step * 7919 + 13) % config.vocabularySize)], firstPosition: depth + step, logits: .last)
                            _ = try engine.forwardLocal(decode)
                            if let load = engine.model.takeExpertLoad() { stepLoads.append(load) }
                        }
                    }
                    engine.release(sequence: sequence)
                    if repetition > 0 {
                        samples.append(Double(generatedTokens) / seconds)
                        loads += stepLoads
                    }
                }
                rows.append(row("tg\(generatedTokens)\(suffix)", samples, gflops: nil, moe: moeLoad(loads)))
            }
            // Memory per rank: peak resident set against the budget
            // 1.15 × (model bytes / N) + KV cache + 300 MB.
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let mine: [Float] = [Float(usage.ru_maxrss) / 1024, Float(engine.model.weights.byteCount) / 1_048_576,
                                 Float(engine.model.cache.byteCount) / 1_048_576]
            let memory = try mine.withUnsafeBufferPointer { try communicator.gather($0.baseAddress!, count: 3) }
            guard communicator.isRoot else { return }
            let memoryRows = (0..<communicator.size).map { r -> MemoryRow in
                let kv = Double(memory[3 * r + 2])
                let budget = 1.15 * modelMiB / Double(communicator.size) + kv + 300
                return MemoryRow(rank: r, peak_rss_mib: Double(memory[3 * r]), weights_mib: Double(memory[3 * r + 1]),
                                 kv_cache_mib: kv, budget_mib: budget)
            }
            switch output {
            case "json":
                Output.write(try jsonString(Report(results: rows, memory: memoryRows)) + "\n")
            case "csv":
                Output.write("model,size_bytes,params,backend,ranks,threads,test,t_s_mean,t_s_stddev\n")
                for r in rows {
                    Output.write("\(r.model),\(r.size_bytes),\(r.params),\(r.backend),\(r.ranks),\(r.threads),\(r.test),\(fmt(r.tokens_per_second_mean)),\(fmt(r.tokens_per_second_stddev))\n")
                }
            default:
                Output.write("| model | size | params | backend | threads | test | t/s |\n")
                Output.write("| ----- | ---: | -----: | ------- | ------: | ---: | --: |\n")
                for r in rows {
                    let size = String(format: "%.2f GiB", Double(r.size_bytes) / 1_073_741_824)
                    let params = String(format: "%.2f B", Double(r.params) / 1e9)
                    Output.write("| \(r.model) | \(size) | \(params) | \(r.backend) ×\(r.ranks) | \(r.threads) | \(r.test) | \(fmt(r.tokens_per_second_mean)) ± \(fmt(r.tokens_per_second_stddev)) |\n")
                }
                Output.write("\n| rank | peak RSS MiB | weights MiB | KV cache MiB | budget MiB (1.15 × model/N + KV + 300) |\n|---:|---:|---:|---:|---:|\n")
                for m in memoryRows {
                    Output.write("| \(m.rank) | \(fmt(m.peak_rss_mib)) | \(fmt(m.weights_mib)) | \(fmt(m.kv_cache_mib)) | \(fmt(m.budget_mib)) |\n")
                }
                if config.moe != nil {
                    Output.write("\nExperts, placement \(placement.rawValue) over \(communicator.size) ranks (\(activeParameters >= 1_000_000_000 ? String(format: "%.2f B", Double(activeParameters) / 1e9) : String(format: "%.2f M", Double(activeParameters) / 1e6)) active parameters): routed tokens of the timed runs per rank, one per token, chosen expert and sparse layer; imbalance = busiest rank / mean rank\n\n")
                    Output.write("| test | routed tokens per rank | imbalance | mean step imbalance |\n|---:|---|---:|---:|\n")
                    for r in rows {
                        guard let moe = r.moe else { continue }
                        Output.write("| \(r.test) | \(moe.routed_tokens_per_rank.map(String.init).joined(separator: " / ")) | \(String(format: "%.3f", moe.load_imbalance)) | \(String(format: "%.3f", moe.step_load_imbalance_mean)) |\n")
                    }
                }
            }
        }
    }

    func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

    /// Parameters one token uses: every sparse layer's unchosen experts left out.
    static func activeParameterCount(_ config: ModelConfig) -> Int {
        guard let moe = config.moe else { return config.parameterCount }
        let sparse = (0..<config.layerCount).filter { moe.isSparse(layer: $0) }.count
        return config.parameterCount - sparse * (moe.expertCount - moe.expertsPerToken) * 3 * config.hiddenSize * moe.expertIntermediateSize
    }
}
