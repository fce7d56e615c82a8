// One convolution layer's forward pass (valid, stride 1), bit for bit the CPU executor's:
// y[s][f][oy][ox] = act(b[f] + Σ_{c, ky, kx} W[f][c][ky][kx]·x[s][c][oy+ky][ox+kx]), the sum in
// (c, ky, kx) order from the bias, each product rounded before it is added (`rn`: the executor
// multiplies and adds separately), then exact.wgsl's activation. Thread (o, s) computes output o
// of sample s. act: 0 none, 1 relu (x > 0 ? x : 0), 2 tanh, 3 sigmoid.
struct Conv {
    n: u32, c: u32, h: u32, w: u32,
    f: u32, k: u32, oh: u32, ow: u32,
    act: u32, zero: u32, prev_act: u32, _a: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> d: Conv;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = d.zero;
    let o = gid.x;
    let s = gid.y;
    let plane = d.oh * d.ow;
    if (s >= d.n || o >= d.f * plane) {
        return;
    }
    let f = o / plane;
    let oy = (o % plane) / d.ow;
    let ox = o % d.ow;
    let xs = s * d.c * d.h * d.w;
    var acc = bias[f];
    for (var c = 0u; c < d.c; c = c + 1u) {
        for (var ky = 0u; ky < d.k; ky = ky + 1u) {
            let row = xs + (c * d.h + oy + ky) * d.w + ox;
            let wrow = ((f * d.c + c) * d.k + ky) * d.k;
            for (var kx = 0u; kx < d.k; kx = kx + 1u) {
                acc = acc + rn(wt[wrow + kx] * x[row + kx]);
            }
        }
    }
    if (d.act == 1u) {
        acc = select(0.0, acc, acc > 0.0);
    } else if (d.act == 2u) {
        acc = exact_tanh(acc);
    } else if (d.act == 3u) {
        acc = exact_sigmoid(acc);
    }
    y[s * d.f * plane + o] = acc;
}
