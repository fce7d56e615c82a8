// One optimizer update of one parameter tensor, bit for bit the CPU path's (optim.rs), each
// product rounded before any sum (`rn`), divisions and square roots correctly rounded:
// mode 0: SGD, p −= lr·g; mode 1: SGD with momentum μ (= beta1), v ← μ·v + g, p −= lr·v;
// mode 2: Adam, m ← β1·m + (1−β1)·g, v ← β2·v + ((1−β2)·g)·g, p −= (lr·(m/c1)) / (√(v/c2) + eps),
// with the bias corrections c1 = 1 − β1^t, c2 = 1 − β2^t computed on the host.
struct Hyper {
    mode: u32, step_slot: u32, batch: u32, zero: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    c1: f32, c2: f32, _a: f32, _b: f32,
}

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<uniform> h: Hyper;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    EXACT_ZERO = h.zero;
    let len = arrayLength(&p);
    // Grid-stride, so any tensor fits the dispatch limit.
    for (var e = gid.x; e < len; e = e + groups.x * 256u) {
        let gv = grad[e];
        if (h.mode == 0u) {
            p[e] = p[e] - rn(h.lr * gv);
        } else if (h.mode == 1u) {
            let vv = rn(h.beta1 * m[e]) + gv;
            m[e] = vv;
            p[e] = p[e] - rn(h.lr * vv);
        } else {
            let mv = rn(h.beta1 * m[e]) + rn((1.0 - h.beta1) * gv);
            let vv = rn(h.beta2 * v[e]) + rn(rn((1.0 - h.beta2) * gv) * gv);
            m[e] = mv;
            v[e] = vv;
            let step = div_rn(rn(h.lr * div_rn(mv, h.c1)), sqrt_rn(div_rn(vv, h.c2)) + h.eps);
            p[e] = p[e] - step;
        }
    }
}
