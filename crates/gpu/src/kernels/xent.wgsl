// Softmax cross-entropy over a batch: per sample i, loss[i] = ln Σ_c exp(z_c − m) − (z_label − m)
// and the gradient of the batch's mean loss w.r.t. the logits,
// g[i][c] = (exp(z_c − m) / Σ − [c = label]) / n, with m = max_c z_c.
struct Dims { n: u32, classes: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= dims.n) {
        return;
    }
    let c = dims.classes;
    let base = i * c;
    var m = z[base];
    for (var j = 1u; j < c; j = j + 1u) {
        m = max(m, z[base + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < c; j = j + 1u) {
        s = s + exp(z[base + j] - m);
    }
    let label = labels[i];
    loss[i] = log(s) - (z[base + label] - m);
    let inv_n = 1.0 / f32(dims.n);
    for (var j = 0u; j < c; j = j + 1u) {
        var p = exp(z[base + j] - m) / s;
        if (j == label) {
            p = p - 1.0;
        }
        g[base + j] = p * inv_n;
    }
}
