// Internal: the cache-blocked GEMM driver shared by the SIMD paths.
//
// Layout (see weft_kernels.h): the weight W [n x k] is prepacked in panels of
// WEFT_GEMM_NR output rows, each panel k-major (for every k index, NR
// contiguous floats). x is row-major [m x k] with stride ldx.
//
// Loop nest (Goto/BLIS order; the prepacked weight panels play the role of
// BLIS' packed A block, the packed x block that of its B panel):
//
//   for each block of `mc` rows of x
//     for each K block of `kc`
//       pack x[rows, kblock] into row groups of <= mr rows, each [kc][rows]
//       for each block of `nb` weight panels      (nb * NR * kc floats in L2)
//         for each row group                      (its x micro-panel in L1)
//           for each panel of the block, each `nrk`-wide slice of it
//             micro-kernel: y[rows x nrk] (+)= xgroup . Wslice
//
// Row groups are balanced (m = 8 with mr = 6 runs as 4 + 4, not 6 + 2). When
// x has a single row group (decode) and the kernel covers whole panels, K is
// not blocked: each panel is then streamed once from memory, front to back,
// in the weights' stored order. The
// micro-kernels are function pointers chosen per ISA; this driver is portable
// C and carries no target attribute.
#ifndef WEFT_GEMM_BLOCKED_H
#define WEFT_GEMM_BLOCKED_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define WEFT_GEMM_NR 32          // rows per packed weight panel (weft_gemm_nr())
#define WEFT_GEMM_MAX_MR 16      // largest micro-kernel row count of any ISA
#define WEFT_GEMM_FEW_GROUPS 4   // up to this many row groups: the chunked decode-batch order
#ifndef WEFT_GEMM_CHUNK_K
#define WEFT_GEMM_CHUNK_K 64     // K chunk of that order (a 8 KiB slice of a panel)
#endif

/// Computes y[0:rows, 0:width) (+)= xp . b over kc steps, where xp is a packed
/// x micro-panel of `rows` rows (element (i, kk) at xp[kk * rows + i]) and b
/// points into a weight panel (element (kk, j) at b[kk * WEFT_GEMM_NR + j]).
/// `width` is at most the kernel's slice width; `load_c` adds the existing y.
typedef void (*weft_gemm_ukernel)(int kc, const float *xp, const float *b, float *c,
                                  size_t ldc, int width, int load_c);

typedef struct {
    int mr;    // most rows per micro-kernel
    int nrk;   // columns per micro-kernel call; divides WEFT_GEMM_NR
    int kc;    // K block
    int nb;    // weight panels per L2 block
    int mc;    // x rows per packed block
    weft_gemm_ukernel kernel[WEFT_GEMM_MAX_MR + 1];  // kernel[r]: r rows, 1 <= r <= mr
} weft_gemm_plan;

// x rows [0, rows) x [0, kc) -> xp[kk * rows + i]
static inline void weft_gemm_pack_x(const float *x, size_t ldx, int rows, int kc, float *xp) {
    for (int i = 0; i < rows; i++) {
        const float *xi = x + (size_t)i * ldx;
        for (int kk = 0; kk < kc; kk++) xp[(size_t)kk * rows + i] = xi[kk];
    }
}

#define WEFT_GEMM_STACK_FLOATS 8192  // 32 KiB of packed x on the stack; larger blocks use the heap

// A few row groups (a batch of decodes): the weights are the traffic, and in
// the blocked order the first group would stream a whole L2 block from memory
// while the others then compute on it with memory idle. Instead x is packed
// for the full K and each panel is walked in short K chunks, every group in
// turn: the chunk the first group pulls in is reused from L1 by the others
// while the hardware streams on through the (sequential) panel, so memory and
// compute overlap. Returns 0 (having done nothing) if the packing buffer
// cannot be allocated.
static inline int weft_gemm_few_groups(const weft_gemm_plan *plan, int m, int n0, int n1, int k,
                                       const float *x, size_t ldx, const float *wpacked, float *y,
                                       size_t ldy, int accumulate) {
    const int NR = WEFT_GEMM_NR, NRK = plan->nrk;
    int groups = (m + plan->mr - 1) / plan->mr, base = m / groups, extra = m % groups;
    float *xfull = malloc(sizeof(float) * (size_t)m * k);
    if (!xfull) return 0;
    for (int g = 0, row = 0; g < groups; g++) {
        int rows = base + (g < extra);
        weft_gemm_pack_x(x + (size_t)row * ldx, ldx, rows, k, xfull + (size_t)row * k);
        row += rows;
    }
    for (int p = n0 / NR, p_end = (n1 + NR - 1) / NR; p < p_end; p++) {
        const float *panel = wpacked + (size_t)p * NR * (size_t)k;
        for (int pc = 0; pc < k; pc += WEFT_GEMM_CHUNK_K) {
            int kc = k - pc < WEFT_GEMM_CHUNK_K ? k - pc : WEFT_GEMM_CHUNK_K;
            int load_c = accumulate || pc > 0;
            for (int g = 0, row = 0; g < groups; g++) {
                int rows = base + (g < extra);
                const float *xp = xfull + (size_t)row * k + (size_t)pc * rows;
                float *yrow = y + (size_t)row * ldy;
                for (int s = 0; s < NR; s += NRK) {
                    int col = p * NR + s;
                    if (col >= n1) break;
                    int width = n1 - col < NRK ? n1 - col : NRK;
                    plan->kernel[rows](kc, xp, panel + (size_t)pc * NR + s, yrow + col, ldy, width, load_c);
                }
                row += rows;
            }
        }
    }
    free(xfull);
    return 1;
}

// ------------------------------------------------ x packed once per call
// Callers that multiply the same activation rows with many weight blocks (the
// weft_wgemm panel path) pack x once, for all its rows and a whole K chunk,
// instead of once per block: x[0:m, 0:kc) as the balanced row groups of
// weft_gemm_blocked (at most mr rows each), group g at xp + row0(g) * kc,
// element (kk, i) of the group at [kk * rows + i].

/// Row group g of m rows split into groups of at most mr: first row and count.
static inline void weft_gemm_group(int m, int mr, int g, int *row0, int *rows) {
    int groups = (m + mr - 1) / mr, base = m / groups, extra = m % groups;
    *rows = base + (g < extra);
    *row0 = g * base + (g < extra ? g : extra);
}

static inline int weft_gemm_groups(int m, int mr) { return (m + mr - 1) / mr; }

/// Packs groups [g0, g1) of x[0:m, 0:kc) (row stride ldx) into xp.
static inline void weft_gemm_pack_groups(int m, int mr, int g0, int g1, int kc, const float *x,
                                         size_t ldx, float *xp) {
    for (int g = g0; g < g1; g++) {
        int row0, rows;
        weft_gemm_group(m, mr, g, &row0, &rows);
        weft_gemm_pack_x(x + (size_t)row0 * ldx, ldx, rows, kc, xp + (size_t)row0 * kc);
    }
}

/// y[0:m, 0:n) (+)= x . W over one K chunk of kc, x packed by
/// weft_gemm_pack_groups with plan->mr, W the packed panels of n rows (panel
/// p at w + p * NR * kc). Each group's x micro-panel stays in L1 while it
/// goes over every panel (the panels are meant to sit in L2).
static inline void weft_gemm_blocked_xp(const weft_gemm_plan *plan, int m, int n, int kc,
                                        const float *xp, const float *w, float *y, size_t ldy,
                                        int load_c) {
    const int NR = WEFT_GEMM_NR, NRK = plan->nrk;
    if (m <= 0 || n <= 0 || kc <= 0) return;
    int panels = (n + NR - 1) / NR;
    for (int g = 0, groups = weft_gemm_groups(m, plan->mr); g < groups; g++) {
        int row0, rows;
        weft_gemm_group(m, plan->mr, g, &row0, &rows);
        weft_gemm_ukernel kern = plan->kernel[rows];
        const float *xg = xp + (size_t)row0 * kc;
        float *yrow = y + (size_t)row0 * ldy;
        for (int p = 0; p < panels; p++) {
            const float *panel = w + (size_t)p * NR * (size_t)kc;
            for (int s = 0; s < NR; s += NRK) {
                int col = p * NR + s;
                if (col >= n) break;
                int width = n - col < NRK ? n - col : NRK;
                kern(kc, xg, panel + s, yrow + col, ldy, width, load_c);
            }
        }
    }
}

static inline void weft_gemm_blocked(const weft_gemm_plan *plan, int m, int n0, int n1, int k,
                                     const float *x, size_t ldx, const float *wpacked, float *y,
                                     size_t ldy, int accumulate) {
    if (m <= 0 || n1 <= n0) return;
    if (k <= 0) {  // empty sum: y = 0, or unchanged when accumulating
        if (!accumulate)
            for (int i = 0; i < m; i++) memset(y + (size_t)i * ldy + n0, 0, sizeof(float) * (size_t)(n1 - n0));
        return;
    }
    const int NR = WEFT_GEMM_NR, MR = plan->mr, NRK = plan->nrk;
    int row_groups = (m + MR - 1) / MR;
    if (row_groups >= 2 && row_groups <= WEFT_GEMM_FEW_GROUPS && m <= plan->mc &&
        weft_gemm_few_groups(plan, m, n0, n1, k, x, ldx, wpacked, y, ldy, accumulate))
        return;
    int MC = m < plan->mc ? m : plan->mc;
    // One row group whose kernel covers whole panels (decode): no K blocking,
    // so each panel streams once, front to back. Kernels that cover a panel in
    // several slices keep K blocked so the slices reuse the block from cache.
    int KC = MC <= MR && NRK == NR ? k : (k < plan->kc ? k : plan->kc);
    float stack_buf[WEFT_GEMM_STACK_FLOATS] __attribute__((aligned(64)));
    float *xbuf = stack_buf, *heap = NULL;
    if ((size_t)MC * KC > WEFT_GEMM_STACK_FLOATS) {
        heap = malloc(sizeof(float) * (size_t)MC * KC);
        if (heap) {
            xbuf = heap;
        } else {  // out of memory: fall back to blocks that fit the stack
            KC = k < plan->kc ? k : plan->kc;
            MC = WEFT_GEMM_STACK_FLOATS / KC < MC ? WEFT_GEMM_STACK_FLOATS / KC : MC;
        }
    }
    int p_first = n0 / NR, p_end = (n1 + NR - 1) / NR;
    for (int i0 = 0; i0 < m; i0 += MC) {
        int mc = m - i0 < MC ? m - i0 : MC;
        int groups = (mc + MR - 1) / MR, base = mc / groups, extra = mc % groups;
        for (int pc = 0; pc < k; pc += KC) {
            int kc = k - pc < KC ? k - pc : KC;
            int load_c = accumulate || pc > 0;
            for (int g = 0, row = 0; g < groups; g++) {
                int rows = base + (g < extra);
                weft_gemm_pack_x(x + (size_t)(i0 + row) * ldx + pc, ldx, rows, kc, xbuf + (size_t)row * kc);
                row += rows;
            }
            for (int jc = p_first; jc < p_end; jc += plan->nb) {
                int jc_end = jc + plan->nb < p_end ? jc + plan->nb : p_end;
                for (int g = 0, row = 0; g < groups; g++) {
                    int rows = base + (g < extra);
                    weft_gemm_ukernel kern = plan->kernel[rows];
                    const float *xp = xbuf + (size_t)row * kc;
                    float *yrow = y + (size_t)(i0 + row) * ldy;
                    for (int p = jc; p < jc_end; p++) {
                        const float *panel = wpacked + (size_t)p * NR * (size_t)k + (size_t)pc * NR;
                        for (int s = 0; s < NR; s += NRK) {
                            int col = p * NR + s;
                            if (col >= n1) break;
                            int width = n1 - col < NRK ? n1 - col : NRK;
                            kern(kc, xp, panel + s, yrow + col, ldy, width, load_c);
                        }
                    }
                    row += rows;
                }
            }
        }
    }
    free(heap);
}

#endif
