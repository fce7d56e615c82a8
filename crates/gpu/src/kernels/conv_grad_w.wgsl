// Weight and bias gradients of one convolution layer, bit for bit the CPU executor's:
// gw[f][c][ky][kx] = Σ_{s, oy, ox} g[s][f][oy][ox]·x[s][c][oy+ky][ox+kx] and
// gb[f] = Σ_{s, oy, ox} g[s][f][oy][ox], both from +0 in (s, oy, ox) order, each product rounded
// before it is added. Thread i computes gw[i]; the threads with (c, ky, kx) = 0 also gb[f].
// g is the gradient w.r.t. the layer's pre-activation output.
struct Conv {
    n: u32, c: u32, h: u32, w: u32,
    f: u32, k: u32, oh: u32, ow: u32,
    act: u32, zero: u32, prev_act: u32, _a: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> gw: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb: array<f32>;
@group(0) @binding(4) var<uniform> d: Conv;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = d.zero;
    let i = gid.x;
    let kk = d.k * d.k;
    if (i >= d.f * d.c * kk) {
        return;
    }
    let kx = i % d.k;
    let ky = (i / d.k) % d.k;
    let c = (i / kk) % d.c;
    let f = i / (kk * d.c);
    let plane = d.oh * d.ow;
    let in_len = d.c * d.h * d.w;
    let out_len = d.f * plane;
    var acc = 0.0;
    for (var s = 0u; s < d.n; s = s + 1u) {
        let gs = s * out_len + f * plane;
        let xs = s * in_len + c * d.h * d.w + ky * d.w + kx;
        for (var oy = 0u; oy < d.oh; oy = oy + 1u) {
            for (var ox = 0u; ox < d.ow; ox = ox + 1u) {
                acc = acc + rn(g[gs + oy * d.ow + ox] * x[xs + oy * d.w + ox]);
            }
        }
    }
    gw[i] = acc;
    if (i % (kk * d.c) == 0u) {
        var b = 0.0;
        for (var s = 0u; s < d.n; s = s + 1u) {
            let gs = s * out_len + f * plane;
            for (var p = 0u; p < plane; p = p + 1u) {
                b = b + g[gs + p];
            }
        }
        gb[f] = b;
    }
}
