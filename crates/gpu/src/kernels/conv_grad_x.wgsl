// Input gradient of one convolution layer through the previous layer's activation, bit for bit
// the CPU executor's: gx[s][c][iy][ix] = Σ_{f, ky, kx} W[f][c][ky][kx]·g[s][f][iy−ky][ix−kx]
// over the (ky, kx) that land inside the output, from +0 in (f, ky, kx) order (the order in which
// the executor's scatter reaches each input), each product rounded before it is added; then relu:
// 0 where y ≤ 0; tanh: · (1 − y·y); sigmoid: · (y·(1 − y)), y the layer's input (the previous
// layer's activated output). Thread (i, s) computes input i of sample s.
struct Conv {
    n: u32, c: u32, h: u32, w: u32,
    f: u32, k: u32, oh: u32, ow: u32,
    act: u32, zero: u32, prev_act: u32, _a: u32,
}

@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;
@group(0) @binding(4) var<uniform> d: Conv;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    EXACT_ZERO = d.zero;
    let i = gid.x;
    let s = gid.y;
    let hw = d.h * d.w;
    let in_len = d.c * hw;
    if (s >= d.n || i >= in_len) {
        return;
    }
    let c = i / hw;
    let iy = (i % hw) / d.w;
    let ix = i % d.w;
    let plane = d.oh * d.ow;
    let gs = s * d.f * plane;
    var acc = 0.0;
    for (var f = 0u; f < d.f; f = f + 1u) {
        for (var ky = 0u; ky < d.k; ky = ky + 1u) {
            if (ky > iy || iy - ky >= d.oh) {
                continue;
            }
            let grow = gs + f * plane + (iy - ky) * d.ow;
            let wrow = ((f * d.c + c) * d.k + ky) * d.k;
            for (var kx = 0u; kx < d.k; kx = kx + 1u) {
                if (kx > ix || ix - kx >= d.ow) {
                    continue;
                }
                acc = acc + rn(wt[wrow + kx] * g[grow + ix - kx]);
            }
        }
    }
    let yv = y[s * in_len + i];
    if (d.prev_act == 1u) {
        if (yv <= 0.0) {
            acc = 0.0;
        }
    } else if (d.prev_act == 2u) {
        acc = acc * (1.0 - rn(yv * yv));
    } else if (d.prev_act == 3u) {
        acc = acc * (yv * (1.0 - yv));
    }
    gx[s * in_len + i] = acc;
}
