// Weight gradient of one dense layer, bit for bit the CPU executor's: gw[k][j] = Σ_i x[i][k]·g[i][j]
// (fused multiply-adds from +0, i ascending) and gb[j] = Σ_i g[i][j] (additions, i ascending).
// Thread (j, k) computes gw[k][j]; the threads with k = 0 also gb[j].
struct Dims { n: u32, inputs: u32, outputs: u32, act: u32, zero: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> gw: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
    let j = gid.x;
    let k = gid.y;
    if (j >= dims.outputs || k >= dims.inputs) {
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < dims.n; i = i + 1u) {
        acc = ffma(x[i * dims.inputs + k], g[i * dims.outputs + j], acc);
    }
    gw[k * dims.outputs + j] = acc;
    if (k == 0u) {
        var b = 0.0;
        for (var i = 0u; i < dims.n; i = i + 1u) {
            b = b + g[i * dims.outputs + j];
        }
        gb[j] = b;
    }
}
