// Runs one function of exact.wgsl over arrays of operands (as bits), for the conformance suite
// and the tests that hold the device to the CPU. op: 0 div_rn(a, b), 1 sqrt_rn(a), 2 exact_exp,
// 3 exact_ln, 4 exact_tanh, 5 exact_sigmoid, 6 rn(a · b) + a (a product rounded before the sum), 7 fma(a, b, a) (the device's), 8 fma_soft(a, b, c) with c the next element of a, 9 ffma(a, b, c) likewise (the kernels' fused
// multiply-add, whichever it is on this device).
struct Probe { op: u32, zero: u32, n: u32, _pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<uniform> probe: Probe;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    EXACT_ZERO = probe.zero;
    for (var i = gid.x; i < probe.n; i = i + groups.x * 64u) {
        let x = bitcast<f32>(a[i]);
        let y = bitcast<f32>(b[i]);
        var r: f32;
        switch probe.op {
            case 0u: { r = div_rn(x, y); }
            case 1u: { r = sqrt_rn(x); }
            case 2u: { r = exact_exp(x); }
            case 3u: { r = exact_ln(x); }
            case 4u: { r = exact_tanh(x); }
            case 5u: { r = exact_sigmoid(x); }
            case 6u: { r = rn(x * y) + x; }
            case 7u: { r = fma(x, y, x); }
            case 8u: { r = fma_soft(x, y, bitcast<f32>(a[(i + 1u) % probe.n])); }
            default: { r = ffma(x, y, bitcast<f32>(a[(i + 1u) % probe.n])); }
        }
        out[i] = bitcast<u32>(r);
    }
}
