// Batched accuracy: the argmax of each row of logits (first on ties), and the count of rows
// whose argmax equals the label.
struct Dims { n: u32, classes: u32, pad0: u32, pad1: u32 }

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> predictions: array<u32>;
@group(0) @binding(3) var<storage, read_write> correct: atomic<u32>;
@group(0) @binding(4) var<uniform> dims: Dims;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= dims.n) {
        return;
    }
    var best = 0u;
    var best_value = logits[i * dims.classes];
    for (var c = 1u; c < dims.classes; c = c + 1u) {
        let v = logits[i * dims.classes + c];
        if (v > best_value) {
            best = c;
            best_value = v;
        }
    }
    predictions[i] = best;
    if (best == labels[i]) {
        atomicAdd(&correct, 1u);
    }
}
