// The fused multiply-add through f64, compiled only where the device has SHADER_F64 (else
// exact_f64_stub.wgsl). The product of two f32 is exact in f64 (24 + 24 ≤ 53 significant bits),
// so s = p + c carries one f64 rounding and TwoSum gives its exact error. Converting s to f32
// rounds a second time, which is wrong only when s sits exactly halfway between two f32 and the
// error is not zero: then the true value a·b + c lies on the error's side, and that neighbour is
// the answer. The device is held to `detmath::fma` by the probe when it is opened and by the
// conformance suite; one that converts or adds differently fails them and uses fma_soft.
// x, through a choice the compiler cannot resolve (EXACT_ZERO is read at run time and is never
// this value): no algebra may rewrite across it, so TwoSum below computes its error, not zero.
fn opaque64(x: f64) -> f64 {
    return select(x, 0.0, EXACT_ZERO == 0x5eedu);
}

fn fma_f64(a: f32, b: f32, c: f32) -> f32 {
    let p = opaque64(f64(a) * f64(b));
    let cd = f64(c);
    let s = opaque64(p + cd);
    let t = f32(s);
    // Infinities and NaN in, or out of f64's finite range: the conversion is the answer.
    if (!(abs(s) < 1.0e300)) {
        return t;
    }
    let z = opaque64(s - p);
    let err = opaque64(p - opaque64(s - z)) + opaque64(cd - z);
    if (err == 0.0) {
        return t;
    }
    let td = f64(t);
    if (td == s) {
        return t;
    }
    if (!(abs(t) <= bitcast<f32>(0x7f7fffffu))) {
        // s rounded to ±∞: only the exact overflow threshold (max + half an ulp) can come back.
        let threshold = f64(bitcast<f32>(0x7f7fffffu)) + f64(bitcast<f32>(0x73000000u));
        if (abs(s) == threshold && (err < 0.0) == (s > 0.0)) {
            return bitcast<f32>(bitcast<u32>(t) - 1u);
        }
        return t;
    }
    // t's f32 neighbour on s's side.
    var nb: u32;
    if (abs(s) > abs(td)) {
        nb = (bitcast<u32>(abs(t)) + 1u) | select(0u, 0x80000000u, s < 0.0);
    } else {
        nb = bitcast<u32>(t) - 1u;
    }
    let nd = f64(bitcast<f32>(nb));
    if (s - td == nd - s && (err > 0.0) == (nd > s)) {
        return bitcast<f32>(nb);
    }
    return t;
}
