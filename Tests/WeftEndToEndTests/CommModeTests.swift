import Foundation
import XCTest

/// Every communication mode and transport, at several TP degrees, gives the
/// logits of one rank (the Hugging Face reference for the tiny Llama; TP 1 of
/// the same random weights for the 12-head shape) within float32 reordering
/// tolerance, on mixed flattened batches.
final class CommModeTests: XCTestCase {
    struct Sequence: Decodable { let tokens: [Int]; let logits: [[Float]] }
    struct Many: Decodable { let sequences: [Sequence] }

    static let reference = TensorParallelTests.reference
    static let shape12 = MPIRun.fixture.deletingLastPathComponent().appendingPathComponent("shapes/random-12h.json").path

    /// Runs `weft logits` with several sequences (and cached prefixes); returns
    /// each sequence's logit rows for its non-prefix positions.
    func logits(ranks: Int, model: [String], sequences: [[Int]], prefixes: [Int], _ extra: [String],
                file: StaticString = #filePath, line: UInt = #line) throws -> [[[Float]]] {
        var arguments = ["logits"] + model + ["--json", "--threads", "1", "--kv-dtype", "f32",
                                              "--prefix-lengths", prefixes.map(String.init).joined(separator: ",")]
        for s in sequences { arguments += ["--tokens", s.map(String.init).joined(separator: ",")] }
        let outcome = try MPIRun.run(ranks: ranks, arguments + extra)
        XCTAssertEqual(outcome.status, 0, "TP \(ranks) \(extra): \(outcome.stderr)", file: file, line: line)
        guard outcome.status == 0 else { return [] }
        let data = Data(outcome.stdout.utf8)
        if sequences.count == 1 { return [try JSONDecoder().decode(Sequence.self, from: data).logits] }
        return try JSONDecoder().decode(Many.self, from: data).sequences.map(\.logits)
    }

    func assertClose(_ actual: [[[Float]]], _ expected: [[[Float]]], _ label: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, label, file: file, line: line)
        for (a, e) in zip(actual, expected) {
            XCTAssertEqual(a.count, e.count, label, file: file, line: line)
            let flatE = e.flatMap { $0 }, flatA = a.flatMap { $0 }
            XCTAssertEqual(flatA.count, flatE.count, label, file: file, line: line)
            let scale = flatE.map(abs).max() ?? 1
            let worst = zip(flatA, flatE).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(label): max |Δ| \(worst)", file: file, line: line)
        }
    }

    /// The tiny Llama's three reference cases as one batch: a 41-token prompt
    /// continuing after 30 cached tokens, a fresh 5-token prefill, and one
    /// decode token of the 7-token case — 18 rows, odd, mixed.
    func mixedTinyLlama(ranks: Int, _ extra: [String], prefixes: [Int] = [30, 0, 6]) throws {
        let cases = Self.reference.logits_cases
        let order = [2, 0, 1]
        let expected = order.enumerated().map { i, c in Array(cases[c].logits[prefixes[i]...]) }
        let actual = try logits(ranks: ranks, model: ["--model", MPIRun.fixture.path],
                                sequences: order.map { cases[$0].tokens }, prefixes: prefixes, extra)
        assertClose(actual, expected, "tiny-llama TP \(ranks) \(extra) prefixes \(prefixes)")
    }

    func testTP2SharedMemoryModes() throws {
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "baseline"])
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "fused"])
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "overlap"])                    // the planner's cut
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "overlap", "--split", "11"])   // request boundary
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "overlap", "--split", "4"])    // inside the long prefill
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "auto"])
    }

    /// `--comm-transport mpi` forces the inter-node path (reduce-scatter +
    /// all-gather over MPI) on one machine.
    func testTP2InterNodePath() throws {
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "fused", "--comm-transport", "mpi"])
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "7"])
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "4,9,13"])   // four chunks
        try mixedTinyLlama(ranks: 2, ["--comm-mode", "auto", "--comm-transport", "mpi"])
    }

    /// Two simulated nodes of two ranks: shared memory inside each, MPI between.
    func testTP4Hierarchical() throws {
        let nodes = ["--comm-transport", "hier", "--ranks-per-node", "2"]
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "fused"] + nodes)
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "overlap", "--split", "9"] + nodes)
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "auto", "--ranks-per-node", "2"])   // auto picks hierarchical
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "overlap", "--split", "1"] + nodes, prefixes: [40, 4, 6])
    }

    /// `--comm-dtype`: between nodes, float32 transfers give the shared-memory
    /// transport's logits bit for bit (the pairwise reduce-scatter sums the
    /// partials in rank order, as the shared-memory kernel does); bf16, fp16
    /// and q8_0 stay within a stated bound of them at TP 2, 3 and 4
    /// (hierarchical), unsplit and overlapped, and a narrow wire really changes
    /// the numbers.
    func testWireFormatsBetweenNodes() throws {
        let cases = Self.reference.logits_cases
        let order = [2, 0, 1], prefixes = [30, 0, 6]
        let sequences = order.map { cases[$0].tokens }
        func run(_ ranks: Int, _ extra: [String]) throws -> [[[Float]]] {
            try logits(ranks: ranks, model: ["--model", MPIRun.fixture.path], sequences: sequences, prefixes: prefixes, extra)
        }
        // bf16 keeps 8 significant bits (relative rounding 2^-9), fp16 11 (2^-12); each
        // of the tiny model's 2 layers rounds 3 times. Measured worst over these runs:
        // 3.5e-3–4.2e-3 (bf16) and 4.5e-4–5.3e-4 (fp16) of the largest logit.
        // q8_0 rounds each value to within half a step of its block of 32 (2^-8 of the block's
        // largest magnitude, not of the value): measured 1.45e-2–1.67e-2, about 4x bf16.
        let bound: [String: Float] = ["bf16": 1e-2, "fp16": 2e-3, "q8_0": 3e-2]
        for (ranks, layout) in [(2, ["--comm-transport", "mpi"]), (3, ["--comm-transport", "mpi"]),
                                (4, ["--comm-transport", "hier", "--ranks-per-node", "2"])] {
            for mode in [["--comm-mode", "fused"], ["--comm-mode", "overlap", "--split", "7"]] {
                let shared = try run(ranks, mode + (ranks == 4 ? ["--comm-transport", "hier", "--ranks-per-node", "2", "--comm-dtype", "f32"]
                                                               : ["--comm-transport", "shm"]))
                let f32 = try run(ranks, mode + layout + ["--comm-dtype", "f32"])
                if ranks < 4 {
                    XCTAssertEqual(f32, shared, "TP \(ranks) \(mode): f32 between nodes differs from shared memory")
                }
                for wire in ["bf16", "fp16", "q8_0"] {
                    let narrow = try run(ranks, mode + layout + ["--comm-dtype", wire])
                    let flatA = narrow.flatMap { $0.flatMap { $0 } }, flatE = f32.flatMap { $0.flatMap { $0 } }
                    XCTAssertEqual(flatA.count, flatE.count)
                    let scale = flatE.map(abs).max() ?? 1
                    let worst = zip(flatA, flatE).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertGreaterThan(worst, 0, "TP \(ranks) \(mode) \(wire): identical to f32, so the wire format was not applied")
                    XCTAssertLessThanOrEqual(worst, bound[wire]! * scale, "TP \(ranks) \(mode) \(wire): max |Δ| \(worst) of \(scale)")
                    print("wire \(wire) TP \(ranks) \(mode): max |Δ| / max |logit| = \(worst / scale)")
                }
            }
        }
    }

    func testBadWireFormatIsRefused() throws {
        let outcome = try MPIRun.run(ranks: 0, ["logits", "--model", MPIRun.fixture.path, "--tokens", "1,2,3", "--comm-dtype", "fp8"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.stderr.contains("--comm-dtype must be auto, f32, bf16, fp16 or q8_0, got fp8"), outcome.stderr)
    }

    func testSharedMemoryRefusedAcrossNodes() throws {
        let outcome = try MPIRun.run(ranks: 2, ["logits", "--model", MPIRun.fixture.path, "--tokens", "1,2,3", "--threads", "1",
                                                "--comm-mode", "fused", "--comm-transport", "shm", "--ranks-per-node", "1"])
        // The library names its parameter (FusedResidualNorm(transport:)); the CLI shows the flag.
        XCTAssertTrue(outcome.stderr.contains("--comm-transport: shm needs every rank on one node"), outcome.stderr)
        XCTAssertFalse(outcome.stderr.contains("FusedResidualNorm"), outcome.stderr)
        XCTAssertEqual(outcome.rankExits.count, 2)
        for (rank, code) in outcome.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank)") }
    }

    func testTP4ModesIncludingTinyBatches() throws {
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "fused"])
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "5"])
        // Decode only: 3 rows, fewer than the 4 ranks.
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "fused"], prefixes: [40, 4, 6])
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "overlap", "--split", "1"], prefixes: [40, 4, 6])
        try mixedTinyLlama(ranks: 4, ["--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "2"], prefixes: [40, 4, 6])
    }

    /// TP 3 and 6 (not powers of two; 12 heads, 4 KV heads: replicated at 6),
    /// uneven intermediate (700) and vocabulary (1001) splits, against TP 1.
    func testTP3AndTP6OnTwelveHeadShapeMatchTP1() throws {
        let model = ["--random-weights", Self.shape12]
        let sequences = [Array(1...37), [5, 9, 2], [700, 1, 1000, 42, 17]]
        let prefixes = [20, 0, 4]
        let one = try logits(ranks: 1, model: model, sequences: sequences, prefixes: prefixes, ["--comm-mode", "baseline"])
        for extra in [["--comm-mode", "baseline"], ["--comm-mode", "fused"], ["--comm-mode", "overlap"],
                      ["--comm-mode", "fused", "--comm-transport", "hier", "--ranks-per-node", "3"],
                      ["--comm-mode", "overlap", "--comm-transport", "mpi", "--split", "9"], ["--comm-mode", "auto"]] {
            assertClose(try logits(ranks: 3, model: model, sequences: sequences, prefixes: prefixes, extra), one, "TP 3 \(extra)")
        }
        assertClose(try logits(ranks: 6, model: model, sequences: sequences, prefixes: prefixes, ["--comm-mode", "overlap", "--split", "6"]),
                    one, "TP 6 overlap")
        assertClose(try logits(ranks: 6, model: model, sequences: sequences, prefixes: prefixes,
                               ["--comm-mode", "overlap", "--split", "6", "--comm-transport", "hier", "--ranks-per-node", "2"]),
                    one, "TP 6 hierarchical: 3 nodes of 2")
    }

    func testSplitTooSmallIsRefusedOnEveryRank() throws {
        let outcome = try MPIRun.run(ranks: 2, ["logits", "--model", MPIRun.fixture.path, "--tokens", "1,2,3",
                                                "--comm-mode", "overlap", "--split", "3", "--threads", "1"])
        XCTAssertFalse(outcome.timedOut)
        XCTAssertTrue(outcome.stderr.contains("--split: cannot cut a batch of 3 tokens at row 3"), outcome.stderr)
        XCTAssertEqual(outcome.rankExits.count, 2)
        for (rank, code) in outcome.rankExits { XCTAssertNotEqual(code, 0, "rank \(rank)") }
    }

    func testNocommIsOnlyForBenchmarks() throws {
        let outcome = try MPIRun.run(ranks: 0, ["logits", "--model", MPIRun.fixture.path, "--tokens", "1,2,3", "--comm-mode", "nocomm"])
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.stderr.contains("--comm-mode must be one of baseline, fused, overlap, auto, got nocomm"), outcome.stderr)
    }
}
