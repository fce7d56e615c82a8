// One dense layer of training, bit for bit the CPU executor's: y[i][j] = act(b[j] + Σ_k x[i][k]·W[k][j])
// with each term one fused multiply-add, k ascending from the bias (the executor's GEMM order,
// through gemm_core.wgsl), then exact.wgsl's activation. act: 0 none, 1 relu (x > 0 ? x : 0),
// 2 tanh, 3 sigmoid. A = x (batch × inputs), B = W (inputs × outputs).
@group(0) @binding(0) var<storage, read> mat_a: array<f32>;
@group(0) @binding(1) var<storage, read> mat_b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
    var acc: array<f32, 16>;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = wg.x * 64u + lid.x + 16u * j;
        var b = 0.0;
        if (c < dims.n) {
            b = bias[c];
        }
        for (var i = 0u; i < 4u; i = i + 1u) {
            acc[i * 4u + j] = b;
        }
    }
    gemm_accumulate(wg, lid, &acc);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = wg.y * 64u + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = wg.x * 64u + lid.x + 16u * j;
            if (r < dims.m && c < dims.n) {
                var v = acc[i * 4u + j];
                if (dims.act == 1u) {
                    v = select(0.0, v, v > 0.0);
                } else if (dims.act == 2u) {
                    v = exact_tanh(v);
                } else if (dims.act == 3u) {
                    v = exact_sigmoid(v);
                }
                y[r * dims.n + c] = v;
            }
        }
    }
}
