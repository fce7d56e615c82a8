// The tiled exact GEMM every dense training kernel is built on (prepended after exact.wgsl; the
// kernel declares `mat_a`, `mat_b` and its outputs). C (m×n) accumulates Σ_kk A[r][kk]·B[kk][c]
// with one fused multiply-add (`ffma`) per term, kk ascending from whatever the kernel put in the
// accumulator: the CPU executor's order for every output. Tiling only changes who loads what:
// each 16×16 workgroup owns a 64×64 tile of C, each thread a 4×4 block of it in registers (rows
// lid.y + 16i, columns lid.x + 16j), and A and B pass through workgroup memory 16 terms at a
// time. Terms past k are never added (not even as zeros: +0 added to −0 gives +0).
// A[r][kk] is mat_a[r·a_rs + kk·a_ks] and B[kk][c] is mat_b[kk·b_ks + c·b_cs], so one core
// serves x·W, xᵀ·g and g·Wᵀ.
struct Gemm {
    m: u32, n: u32, k: u32, a_rs: u32,
    a_ks: u32, b_ks: u32, b_cs: u32, act: u32,
    zero: u32, _a: u32, _b: u32, _c: u32,
}

@group(0) @binding(4) var<uniform> dims: Gemm;

// sa[kk·64 + r]: the A tile; sb[kk·64 + c]: the B tile.
var<workgroup> sa: array<f32, 1024>;
var<workgroup> sb: array<f32, 1024>;

fn gemm_load_tile(t: u32, tid: u32, row0: u32, col0: u32) {
    for (var l = 0u; l < 4u; l = l + 1u) {
        let e = tid + l * 256u;
        // Neighbouring threads read neighbouring addresses, whichever way the operand is laid out.
        var ar = e % 64u;
        var ac = e / 64u;
        if (dims.a_ks == 1u) {
            ar = e / 16u;
            ac = e % 16u;
        }
        var av = 0.0;
        if (row0 + ar < dims.m && t + ac < dims.k) {
            av = mat_a[(row0 + ar) * dims.a_rs + (t + ac) * dims.a_ks];
        }
        sa[ac * 64u + ar] = av;
        var br = e / 64u;
        var bc = e % 64u;
        if (dims.b_cs != 1u) {
            br = e % 16u;
            bc = e / 16u;
        }
        var bv = 0.0;
        if (t + br < dims.k && col0 + bc < dims.n) {
            bv = mat_b[(t + br) * dims.b_ks + (col0 + bc) * dims.b_cs];
        }
        sb[br * 64u + bc] = bv;
    }
}

fn gemm_accumulate(wg: vec3<u32>, lid: vec3<u32>, acc: ptr<function, array<f32, 16>>) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let tid = lid.y * 16u + lid.x;
    for (var t = 0u; t < dims.k; t = t + 16u) {
        gemm_load_tile(t, tid, row0, col0);
        workgroupBarrier();
        let kend = min(16u, dims.k - t);
        for (var kk = 0u; kk < kend; kk = kk + 1u) {
            let a0 = sa[kk * 64u + lid.y];
            let a1 = sa[kk * 64u + lid.y + 16u];
            let a2 = sa[kk * 64u + lid.y + 32u];
            let a3 = sa[kk * 64u + lid.y + 48u];
            for (var j = 0u; j < 4u; j = j + 1u) {
                let bv = sb[kk * 64u + lid.x + 16u * j];
                (*acc)[j] = ffma(a0, bv, (*acc)[j]);
                (*acc)[4u + j] = ffma(a1, bv, (*acc)[4u + j]);
                (*acc)[8u + j] = ffma(a2, bv, (*acc)[8u + j]);
                (*acc)[12u + j] = ffma(a3, bv, (*acc)[12u + j]);
            }
        }
        workgroupBarrier();
    }
}
