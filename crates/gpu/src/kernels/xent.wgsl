// Softmax cross-entropy over a batch, bit for bit the CPU executor's: per sample i, with
// m = max_c z_c, e_c = exp(z_c − m) and s = Σ_c e_c (c ascending), its loss ln s − (z_label − m)
// goes to losses[slot·n + i] (the host averages them in f64, as the executor does), and the
// gradient of the batch's mean loss is g[i][c] = e_c / s · (1/n), minus 1/n at the label.
struct Dims { n: u32, classes: u32, zero: u32, _b: u32 }
struct Hyper {
    mode: u32, step_slot: u32, batch: u32, zero: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    c1: f32, c2: f32, _a: f32, _b: f32,
}

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;
@group(0) @binding(5) var<uniform> h: Hyper;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = dims.zero;
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
        let e = exact_exp(z[base + j] - m);
        g[base + j] = e;
        s = s + e;
    }
    let label = labels[i];
    losses[h.step_slot * dims.n + i] = exact_ln(s) - (z[base + label] - m);
    let inv_n = div_rn(1.0, f32(dims.n));
    for (var j = 0u; j < c; j = j + 1u) {
        g[base + j] = rn(div_rn(g[base + j], s) * inv_n);
    }
    g[base + label] = g[base + label] - inv_n;
}
