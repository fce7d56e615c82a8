// The step's mean loss: losses[step_slot] = Σ_i sample_loss[i] / batch, summed in order by one
// thread (the batch is small).
struct Hyper {
    mode: u32, step_slot: u32, batch: u32, _c: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    c1: f32, c2: f32, _a: f32, _b: f32,
}

@group(0) @binding(0) var<storage, read> sample_loss: array<f32>;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<uniform> h: Hyper;

@compute @workgroup_size(1)
fn main() {
    var s = 0.0;
    for (var i = 0u; i < h.batch; i = i + 1u) {
        s = s + sample_loss[i];
    }
    losses[h.step_slot] = s / f32(h.batch);
}
