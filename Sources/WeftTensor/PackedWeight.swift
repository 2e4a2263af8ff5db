import CKernels

/// A linear layer's weight `[outFeatures x inFeatures]`, packed for
/// `weft_gemm_packed` (panels of NR output rows) and first-touched by the
/// thread that multiplies each panel.
public final class PackedWeight: @unchecked Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let storage: FloatBuffer

    public static var panelRows: Int { Int(weft_gemm_nr()) }

    /// Allocates the packed buffer and fills it in parallel: for each panel,
    /// `fillRows(firstRow, rowCount, scratch, ld)` writes `rowCount` rows of
    /// `inFeatures` floats (row stride `ld`) into `scratch`; the pool thread
    /// that will own the panel in `weft_op_linear` packs it.
    public init(outFeatures: Int, inFeatures: Int, node: Int?, pool: ComputePool,
                fillRows: (_ firstRow: Int, _ rowCount: Int, _ scratch: UnsafeMutablePointer<Float>, _ ld: Int) -> Void) {
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        let nr = PackedWeight.panelRows
        storage = FloatBuffer(count: Int(weft_gemm_packed_floats(Int32(outFeatures), Int32(inFeatures))), node: node)
        let base = storage.pointer
        pool.run { t, threads in
            var p0: Int32 = 0, p1: Int32 = 0
            weft_gemm_panel_range(Int32(outFeatures), Int32(threads), Int32(t), &p0, &p1)
            guard p0 < p1 else { return }
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: nr * max(inFeatures, 1))
            defer { scratch.deallocate() }
            for panel in Int(p0)..<Int(p1) {
                let first = panel * nr
                let rows = min(nr, outFeatures - first)
                fillRows(first, rows, scratch, inFeatures)
                weft_gemm_pack_panel(scratch, inFeatures, Int32(rows), Int32(inFeatures),
                                     base + panel * nr * inFeatures)
            }
        }
    }

    /// y[0..<m, 0..<outFeatures] = x[0..<m, 0..<inFeatures] · Wᵀ.
    public func apply(pool: ComputePool, rows m: Int, x: UnsafePointer<Float>, ldx: Int,
                      y: UnsafeMutablePointer<Float>, ldy: Int) {
        weft_op_linear(pool.raw, Int32(m), Int32(outFeatures), Int32(inFeatures), x, ldx,
                       storage.pointer, y, ldy)
    }
}
