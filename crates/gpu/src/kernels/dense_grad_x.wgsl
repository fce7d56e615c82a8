// Input gradient of one dense layer through the previous layer's activation, bit for bit the CPU
// executor's: gx[i][k] = (Σ_j g[i][j]·W[k][j], fused multiply-adds from +0, j ascending, through
// gemm_core.wgsl: A = g, B = Wᵀ), then relu: 0 where y ≤ 0; tanh: · (1 − y·y); sigmoid:
// · (y·(1 − y)), y the layer's input (the previous layer's activated output).
// act (the previous layer's): 0 none, 1 relu, 2 tanh, 3 sigmoid.
@group(0) @binding(0) var<storage, read> mat_a: array<f32>;
@group(0) @binding(1) var<storage, read> mat_b: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

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
                var v = acc[i * 4u + j];
                let yv = y[r * dims.n + c];
                if (dims.act == 1u) {
                    if (yv <= 0.0) {
                        v = 0.0;
                    }
                } else if (dims.act == 2u) {
                    v = v * (1.0 - rn(yv * yv));
                } else if (dims.act == 3u) {
                    v = v * (yv * (1.0 - yv));
                }
                gx[r * dims.n + c] = v;
            }
        }
    }
}
