// This device has no f64: the f64 fused multiply-add is never selected (F64_FMA stays false).
fn fma_f64(a: f32, b: f32, c: f32) -> f32 {
    return fma_soft(a, b, c);
}
