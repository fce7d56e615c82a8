// Weight gradient of one dense layer, bit for bit the CPU executor's: gw[k][j] = Σ_i x[i][k]·g[i][j]
// (fused multiply-adds from +0, i ascending, through gemm_core.wgsl: A = xᵀ, B = g) and
// gb[j] = Σ_i g[i][j] (additions from +0, i ascending), by the first row of threads of the
// workgroups on the first row of tiles.
@group(0) @binding(0) var<storage, read> mat_a: array<f32>;
@group(0) @binding(1) var<storage, read> mat_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> gw: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb: array<f32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
    var acc: array<f32, 16>;
    for (var e = 0u; e < 16u; e = e + 1u) {
        acc[e] = 0.0;
    }
    gemm_accumulate(wg, lid, &acc);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = wg.y * 64u + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = wg.x * 64u + lid.x + 16u * j;
            if (r < dims.m && c < dims.n) {
                gw[r * dims.n + c] = acc[i * 4u + j];
            }
        }
    }
    if (wg.y == 0u && lid.y == 0u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = wg.x * 64u + lid.x + 16u * j;
            if (c < dims.n) {
                var b = 0.0;
                for (var i = 0u; i < dims.k; i = i + 1u) {
                    b = b + mat_b[i * dims.b_ks + c];
                }
                gb[c] = b;
            }
        }
    }
}
