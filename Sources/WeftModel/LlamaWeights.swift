import CKernels
import Foundation
import WeftTensor

/// One rank's share of the weights of a Llama-family model or of one of its
/// mixture-of-experts relatives (Mixtral, Qwen2-MoE, Qwen3-MoE). Linear layers keep
/// the format chosen at load (float32 packed panels, 16-bit floats or ggml
/// blocks: see `WeightFormat`); norms and biases are float32. Each rank's
/// pages are placed on its NUMA node by the threads that multiply them.
public final class LlamaWeights: @unchecked Sendable {
    public final class Layer: @unchecked Sendable {
        public let inputNorm: FloatBuffer
        /// q (local heads), k and v (local KV heads) rows, one GEMM per format.
        public let qkv: Linear
        public let qkvBias: FloatBuffer?
        /// o_proj columns of the local heads.
        public let output: Linear
        public let postAttentionNorm: FloatBuffer
        /// Qwen3's per-head RMSNorm weights of q and k (head_dim each).
        public let qNorm: FloatBuffer?
        public let kNorm: FloatBuffer?
        /// gate rows then up rows of the local intermediate range (dense layers).
        public let gateUp: Linear?
        /// down_proj columns of the local intermediate range (dense layers).
        public let down: Linear?
        /// The router and this rank's experts (sparse layers).
        public let experts: ExpertWeights?

        init(inputNorm: FloatBuffer, qkv: Linear, qkvBias: FloatBuffer?, output: Linear,
             postAttentionNorm: FloatBuffer, qNorm: FloatBuffer?, kNorm: FloatBuffer?,
             gateUp: Linear?, down: Linear?, experts: ExpertWeights?) {
            self.inputNorm = inputNorm
            self.qkv = qkv
            self.qkvBias = qkvBias
            self.output = output
            self.postAttentionNorm = postAttentionNorm
            self.qNorm = qNorm
            self.kNorm = kNorm
            self.gateUp = gateUp
            self.down = down
            self.experts = experts
        }

        /// Every linear layer of the layer on this rank.
        var linears: [Linear] {
            [qkv, output] + [gateUp, down].compactMap { $0 } + (experts?.linears ?? [])
        }
    }

    /// A sparse layer's router and this rank's experts.
    public final class ExpertWeights: @unchecked Sendable {
        /// One output per expert, every rank the whole router.
        public let router: Linear
        /// The experts this rank holds (`plan.experts`).
        public let held: Range<Int>
        /// Gate rows then up rows of each held expert's local intermediate
        /// range, indexed by expert − `held.lowerBound`.
        public let gateUp: [Linear]
        /// Down columns of each held expert's local intermediate range.
        public let down: [Linear]
        /// The shared expert's local slice (Qwen2-MoE), and its sigmoid gate's one row.
        public let shared: (gateUp: Linear, down: Linear, gate: Linear)?

        init(router: Linear, held: Range<Int>, gateUp: [Linear], down: [Linear], shared: (gateUp: Linear, down: Linear, gate: Linear)?) {
            self.router = router
            self.held = held
            self.gateUp = gateUp
            self.down = down
            self.shared = shared
        }

        var linears: [Linear] {
            [router] + gateUp + down + (shared.map { [$0.gateUp, $0.down, $0.gate] } ?? [])
        }
    }

    /// The embedding table of the local vocabulary range.
    public enum Embedding: @unchecked Sendable {
        case floats(FloatBuffer)
        case blocks(BlockWeight)
        /// Tied to the LM head, whose rows are read for lookups.
        case tied
    }

    public let config: ModelConfig
    public let plan: TensorParallelPlan
    public let embedding: Embedding
    public let layers: [Layer]
    public let finalNorm: FloatBuffer
    /// LM head rows of the local vocabulary range.
    public let lmHead: Linear
    /// Working memory of the block-format kernels, shared by every layer.
    public let scratch = WeightScratch()
    /// One line per kind of tensor converted at load because its stored
    /// blocks do not fall on this tensor-parallel split (printed by rank 0).
    public private(set) var conversions: [String] = []

    /// Bytes of weights resident on this rank.
    public var byteCount: Int {
        var bytes = (finalNorm.count) * 4 + lmHead.byteCount
        switch embedding {
        case .floats(let table): bytes += table.count * 4
        case .blocks(let table): bytes += table.byteCount
        case .tied: break
        }
        for l in layers {
            bytes += (l.inputNorm.count + l.postAttentionNorm.count + (l.qkvBias?.count ?? 0)) * 4
            bytes += ((l.qNorm?.count ?? 0) + (l.kNorm?.count ?? 0)) * 4
            bytes += l.linears.reduce(0) { $0 + $1.byteCount }
        }
        return bytes
    }

    /// The formats of the linear layers, e.g. "q4_K+q6_K" for a Q4_K_M file.
    public var formatDescription: String {
        var seen: [String] = []
        for linear in layers.flatMap(\.linears) + [lmHead] {
            for part in linear.parts where !seen.contains(part.format.description) { seen.append(part.format.description) }
        }
        return seen.joined(separator: "+")
    }

    /// The block size the intermediate (MLP) split should align to, so that
    /// down_proj's columns split on its blocks: the largest block among the
    /// formats its tensors (the table's row-parallel intermediate ones) will have.
    public static func intermediateAlignment(config: ModelConfig, source: WeightSource, format: WeightFormat?) -> Int {
        let rowParallel: [TensorSplit] = [.rowParallel(.intermediate), .rowParallel(.expertIntermediate), .rowParallel(.sharedExpertIntermediate)]
        return config.tensorTable.tensors(config).filter { rowParallel.contains($0.entry.split) }.map {
            (format ?? source.storedFormat($0.name)).blockElements
        }.max() ?? 1
    }

    /// A contiguous piece of the rows of a fused weight: `rowCount` rows read
    /// from `tensor` starting at `firstRow`, restricted to `columns`.
    struct Segment {
        var tensor: String
        var firstRow: Int
        var rowCount: Int
        var columns: Range<Int>
    }

    /// Validates every tensor against the config, then loads this rank's slices.
    ///
    /// - Parameter format: the format of every linear weight (and of an
    ///   untied embedding), quantized or widened at load; nil keeps each
    ///   tensor's stored format (a bf16 checkpoint stays bf16, a GGUF tensor
    ///   is copied as its blocks are). A tensor whose blocks would be cut by
    ///   this rank's split is converted to Q8_0 (or a 16-bit float where even
    ///   32 does not divide the split) and listed in `conversions`.
    public init(config: ModelConfig, plan: TensorParallelPlan, source: WeightSource, pool: ComputePool, node: Int?,
                format requested: WeightFormat? = nil) throws {
        self.config = config
        self.plan = plan
        let h = config.hiddenSize, hd = config.headDim
        let tied = config.tieWordEmbeddings
        let table = config.tensorTable
        if let requested, !requested.canQuantize {
            throw ModelError.input("weight format \(requested) cannot be produced at load (only f32, f16, bf16, q8_0, q4_0, q4_1)")
        }

        // Validate first, so a bad checkpoint fails before any slow loading,
        // and add up this rank's share of the weights in their formats. The
        // table lists every tensor the config needs, in validation order.
        var shareBytes = 0.0
        for tensor in table.tensors(config) {
            let shape = tensor.entry.shape(config)
            try source.validate(tensor.name, shape: shape)
            guard shape.count == 2 else { continue }
            let format = requested ?? source.storedFormat(tensor.name)
            shareBytes += Double(shape[0]) * Double(shape[1]) * Double(format.blockBytes) / Double(format.blockElements) / Double(plan.size)
        }

        // Refuse a model this host cannot hold before allocating any of it (a
        // config within every limit can still ask for terabytes, e.g. with
        // random weights).
        let hostBytes = Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
        if hostBytes > 0, shareBytes > hostBytes {
            let gib = { (bytes: Double) in String(format: "%.1f GiB", bytes / 1_073_741_824) }
            throw ModelError.parallelism("the model's weights need \(gib(shareBytes)) per rank at tensor-parallel degree \(plan.size) (\(config.parameterCount) parameters), more than this host's \(gib(hostBytes)) of memory")
        }

        // Every rank's plan, so that a tensor converted because some rank's
        // slice would cut its blocks is converted on every rank alike.
        let plans = (0..<plan.size).map { r in
            r == plan.rank ? plan : (try? TensorParallelPlan(config: config, rank: r, size: plan.size,
                                                            intermediateAlignment: plan.intermediateAlignment,
                                                            headSplit: plan.headSplit, moePlacement: plan.moePlacement)) ?? plan
        }
        var conversionNames: [String: [String]] = [:]
        let scratch = self.scratch

        /// The format `tensor` is held in, given the column ranges of every rank.
        func target(_ tensor: String, columns allColumns: [Range<Int>]) -> WeightFormat {
            let stored = source.storedFormat(tensor)
            let want = requested ?? stored
            func fits(_ block: Int) -> Bool { allColumns.allSatisfy { $0.lowerBound % block == 0 && $0.count % block == 0 } }
            if fits(want.blockElements) { return want }
            let fallback: WeightFormat = fits(32) ? .q8_0 : (stored == .f32 || stored == .bf16 ? stored : .f16)
            let short = tensor.replacingOccurrences(of: "model.layers.", with: "")
            let rowLength = allColumns.last?.upperBound ?? 0
            let why = rowLength % want.blockElements != 0
                ? "rows of \(rowLength) are not a multiple of \(want)'s block of \(want.blockElements); kept as \(fallback)"
                : "\(want) blocks of \(want.blockElements) do not fall on the tensor-parallel split at degree \(plan.size); converted to \(fallback) at load"
            conversionNames[why, default: []].append(short)
            return fallback
        }

        /// Rows [first, first + count) of a fused weight made of `segments`:
        /// `body(segment, sourceRows, outputRow)` for each contiguous piece,
        /// `outputRow` counted from `first`.
        func pieces(_ segments: [Segment], first: Int, count: Int, _ body: (Segment, Range<Int>, Int) -> Void) {
            var row = first, offset = 0
            for segment in segments {
                defer { offset += segment.rowCount }
                guard row < first + count, row < offset + segment.rowCount else { continue }
                let take = min(first + count - row, offset + segment.rowCount - row)
                let sourceRow = segment.firstRow + (row - offset)
                body(segment, sourceRow..<sourceRow + take, row - first)
                row += take
            }
        }

        /// Rows of `format` for `segments`, each read as stored or converted
        /// through float32.
        func fill(_ segments: [Segment], format: WeightFormat, first: Int, count: Int, destination: UnsafeMutableRawPointer, rowBytes: Int) {
            pieces(segments, first: first, count: count) { segment, rows, outputRow in
                let out = destination + outputRow * rowBytes
                if source.storedFormat(segment.tensor) == format {
                    source.readStoredRows(segment.tensor, rows: rows, columns: segment.columns, into: out, stride: rowBytes)
                    return
                }
                let k = segment.columns.count
                let floats = UnsafeMutablePointer<Float>.allocate(capacity: k)
                defer { floats.deallocate() }
                for (i, r) in rows.enumerated() {
                    source.readSlice(segment.tensor, rows: r..<r + 1, columns: segment.columns, into: floats, ld: k)
                    _ = weft_quantize_row(format.rawValue, floats, out + i * rowBytes, Int64(k))
                }
            }
        }

        /// A linear layer from `segments`; consecutive segments of one format
        /// share a GEMM. `columnsByRank` gives each rank's columns of a
        /// row-parallel weight (nil: whole rows).
        func linear(_ segments: [Segment], inFeatures: Int, columnsByRank: [Range<Int>]? = nil) -> Linear {
            var groups: [(WeightFormat, [Segment])] = []
            for segment in segments {
                let format = target(segment.tensor, columns: columnsByRank ?? [segment.columns])
                if let last = groups.last, last.0 == format { groups[groups.count - 1].1.append(segment) } else { groups.append((format, [segment])) }
            }
            let parts = groups.map { format, group -> Linear.Part in
                let total = group.reduce(0) { $0 + $1.rowCount }
                if format == .f32 {
                    return .packed(PackedWeight(outFeatures: total, inFeatures: inFeatures, node: node, pool: pool) { first, count, scratch, ld in
                        pieces(group, first: first, count: count) { segment, rows, outputRow in
                            source.readSlice(segment.tensor, rows: rows, columns: segment.columns, into: scratch + outputRow * ld, ld: ld)
                        }
                    })
                }
                let rowBytes = format.rowBytes(inFeatures)!
                return .blocks(BlockWeight(format: format, outFeatures: total, inFeatures: inFeatures, node: node, pool: pool, scratch: scratch) { first, count, destination in
                    fill(group, format: format, first: first, count: count, destination: destination, rowBytes: rowBytes)
                })
            }
            for segment in Set(segments.map(\.tensor)) { source.finished(segment) }
            return Linear(parts: parts, inFeatures: inFeatures)
        }

        /// This rank's rows and columns of `entry`, as the table splits it.
        func segment(_ entry: TensorEntry, layer: Int?, expert: Int? = nil) -> Segment {
            let shape = entry.shape(config)
            let rows = shape.count == 2 ? shape[0] : 1, columns = shape[shape.count - 1]
            let tensor = entry.huggingFaceName(layer: layer, expert: expert)
            switch entry.split {
            case .columnParallel(let d) where shape.count == 1:
                return Segment(tensor: tensor, firstRow: 0, rowCount: 1, columns: plan.range(of: d, headDim: hd))
            case .columnParallel(let d):
                let r = plan.range(of: d, headDim: hd)
                return Segment(tensor: tensor, firstRow: r.lowerBound, rowCount: r.count, columns: 0..<columns)
            case .rowParallel(let d):
                return Segment(tensor: tensor, firstRow: 0, rowCount: rows, columns: plan.range(of: d, headDim: hd))
            case .vocabularyParallel:
                return Segment(tensor: tensor, firstRow: plan.vocabulary.lowerBound, rowCount: plan.vocabulary.count, columns: 0..<columns)
            case .replicated:
                return Segment(tensor: tensor, firstRow: 0, rowCount: rows, columns: 0..<columns)
            }
        }
        /// A linear layer fusing `entries` of layer `layer` (their rows stacked).
        func fused(_ entries: [TensorEntry], layer: Int?, expert: Int? = nil) -> Linear {
            let segments = entries.map { segment($0, layer: layer, expert: expert) }
            var columnsByRank: [Range<Int>]?
            if case .rowParallel(let d) = entries[0].split { columnsByRank = plans.map { $0.range(of: d, headDim: hd) } }
            return linear(segments, inFeatures: segments[0].columns.count, columnsByRank: columnsByRank)
        }
        /// A vector (norm weight, bias) or several fused: this rank's elements.
        func vector(_ entries: [TensorEntry], layer: Int?) -> FloatBuffer {
            let segments = entries.map { segment($0, layer: layer) }
            let buffer = FloatBuffer(count: segments.reduce(0) { $0 + $1.columns.count }, node: node)
            var offset = 0
            for s in segments {
                source.readVector(s.tensor, range: s.columns, into: buffer.pointer + offset)
                source.finished(s.tensor)
                offset += s.columns.count
            }
            return buffer
        }

        typealias A = LlamaArchitecture
        var layers: [Layer] = []
        for i in 0..<config.layerCount {
            let qkv = fused([A.qProj, A.kProj, A.vProj], layer: i)
            let bias = A.qBias.isPresent(config) ? vector([A.qBias, A.kBias, A.vBias], layer: i) : nil
            let qkNorm = config.qkNorm ? config.qkNormEntries : nil
            var experts: ExpertWeights?
            if config.isSparse(layer: i), let e = config.moeEntries {
                let held = plan.experts
                experts = ExpertWeights(
                    router: fused([e.router], layer: i),
                    held: held,
                    gateUp: held.map { fused([e.gate, e.up], layer: i, expert: $0) },
                    down: held.map { fused([e.down], layer: i, expert: $0) },
                    shared: e.shared.flatMap { s in
                        s.gate.isPresent(config)
                            ? (gateUp: fused([s.gate, s.up], layer: i), down: fused([s.down], layer: i), gate: fused([s.sigmoidGate], layer: i))
                            : nil
                    })
            }
            layers.append(Layer(
                inputNorm: vector([A.inputNorm], layer: i),
                qkv: qkv,
                qkvBias: bias,
                output: fused([A.oProj], layer: i),
                postAttentionNorm: vector([A.postAttentionNorm], layer: i),
                qNorm: qkNorm.map { vector([$0.q], layer: i) },
                kNorm: qkNorm.map { vector([$0.k], layer: i) },
                gateUp: experts == nil ? fused([A.gateProj, A.upProj], layer: i) : nil,
                down: experts == nil ? fused([A.downProj], layer: i) : nil,
                experts: experts))
        }
        self.layers = layers
        finalNorm = vector([A.finalNorm], layer: nil)
        let vocab = plan.vocabulary
        // Tied: the LM head reads the embedding's rows (same shape and split).
        let head = tied ? segment(A.embedding, layer: nil) : segment(A.lmHead, layer: nil)
        lmHead = linear([head], inFeatures: h)
        let embedSegment = segment(A.embedding, layer: nil)
        let embedTensor = embedSegment.tensor
        if tied {
            embedding = .tied
        } else if case let format = target(embedTensor, columns: [0..<h]), format != .f32 {
            let rowBytes = format.rowBytes(h)!
            embedding = .blocks(BlockWeight(format: format, outFeatures: vocab.count, inFeatures: h, node: node, pool: pool, scratch: scratch) { first, count, destination in
                fill([embedSegment], format: format, first: first, count: count, destination: destination, rowBytes: rowBytes)
            })
            source.finished(embedTensor)
        } else {
            let floats = FloatBuffer(count: vocab.count * h, node: node)
            // Rows are first-touched by the pool threads in even row ranges.
            pool.run { t, n in
                let rows = TensorParallelPlan.evenSplit(vocab.count, parts: n, index: t)
                guard !rows.isEmpty else { return }
                source.readSlice(embedTensor, rows: vocab.lowerBound + rows.lowerBound ..< vocab.lowerBound + rows.upperBound,
                                 columns: 0..<h, into: floats.pointer + rows.lowerBound * h, ld: h)
            }
            source.finished(embedTensor)
            embedding = .floats(floats)
        }
        conversions = conversionNames.keys.sorted().map { why in
            let names = conversionNames[why]!
            let shown = names.count > 4 ? names.prefix(3).joined(separator: ", ") + " and \(names.count - 3) more" : names.joined(separator: ", ")
            return "\(shown): \(why)"
        }
    }

    /// Copies the embedding of global token `token` (which must be in this
    /// rank's vocabulary range) into `out`.
    func embed(token: Int, into out: UnsafeMutablePointer<Float>) {
        let local = token - plan.vocabulary.lowerBound
        let h = config.hiddenSize
        switch embedding {
        case .floats(let table): out.update(from: table.pointer + local * h, count: h)
        case .blocks(let table): table.dequantizeRow(local, into: out)
        case .tied: lmHead.row(local, into: out)
        }
    }
}
