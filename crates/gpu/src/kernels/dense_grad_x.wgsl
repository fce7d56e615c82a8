// Input gradient of one dense layer through the previous layer's activation, bit for bit the CPU
// executor's: gx[i][k] = (Σ_j g[i][j]·W[k][j], fused multiply-adds from +0, j ascending), then
// relu: 0 where y ≤ 0; tanh: · (1 − y·y); sigmoid: · (y·(1 − y)), y the layer's input (the
// previous layer's activated output). act: 0 none, 1 relu, 2 tanh, 3 sigmoid.
struct Dims { n: u32, inputs: u32, outputs: u32, act: u32, zero: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
    let k = gid.x;
    let i = gid.y;
    if (k >= dims.inputs || i >= dims.n) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < dims.outputs; j = j + 1u) {
        acc = ffma(g[i * dims.outputs + j], w[k * dims.outputs + j], acc);
    }
    let yv = y[i * dims.inputs + k];
    if (dims.act == 1u) {
        if (yv <= 0.0) {
            acc = 0.0;
        }
    } else if (dims.act == 2u) {
        acc = acc * (1.0 - rn(yv * yv));
    } else if (dims.act == 3u) {
        acc = acc * (yv * (1.0 - yv));
    }
    gx[i * dims.inputs + k] = acc;
}
