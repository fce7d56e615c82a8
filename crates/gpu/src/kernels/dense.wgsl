// One dense layer of batched evaluation: y (n×o) = act(x (n×i) · W (i×o) + b).
// act: 0 none, 1 relu, 2 tanh, 3 sigmoid.
struct Dims { n: u32, inputs: u32, outputs: u32, act: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    if (i >= dims.n || j >= dims.outputs) {
        return;
    }
    var acc = bias[j];
    for (var k = 0u; k < dims.inputs; k = k + 1u) {
        acc = acc + x[i * dims.inputs + k] * w[k * dims.outputs + j];
    }
    if (dims.act == 1u) {
        acc = max(acc, 0.0);
    } else if (dims.act == 2u) {
        acc = tanh(acc);
    } else if (dims.act == 3u) {
        acc = 1.0 / (1.0 + exp(-acc));
    }
    y[i * dims.outputs + j] = acc;
}
