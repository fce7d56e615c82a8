// One dense layer of training, bit for bit the CPU executor's: y[i][j] = act(b[j] + Σ_k x[i][k]·W[k][j])
// with each term one fused multiply-add, k ascending from the bias (the executor's GEMM order),
// then exact.wgsl's activation. act: 0 none, 1 relu (x > 0 ? x : 0), 2 tanh, 3 sigmoid.
struct Dims { n: u32, inputs: u32, outputs: u32, act: u32, zero: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
    let j = gid.x;
    let i = gid.y;
    if (i >= dims.n || j >= dims.outputs) {
        return;
    }
    var acc = bias[j];
    for (var k = 0u; k < dims.inputs; k = k + 1u) {
        acc = ffma(x[i * dims.inputs + k], w[k * dims.outputs + j], acc);
    }
    if (dims.act == 1u) {
        acc = select(0.0, acc, acc > 0.0);
    } else if (dims.act == 2u) {
        acc = exact_tanh(acc);
    } else if (dims.act == 3u) {
        acc = exact_sigmoid(acc);
    }
    y[i * dims.outputs + j] = acc;
}
