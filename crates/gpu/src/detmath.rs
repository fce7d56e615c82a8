//! Transcendental functions with a fixed sequence of IEEE operations, so that every platform
//! computes the same bits. The platform `exp`/`ln` (libm) differ between C libraries in the last
//! bit, which would break exact checkpoint hashes between a trainer and an evaluator.
//!
//! Both evaluate in f64 (only `+ − × ÷`, which IEEE 754 rounds exactly the same everywhere, and
//! which Rust never contracts into fused multiply-adds) and round once to f32.

const LN2: f64 = std::f64::consts::LN_2;

/// `2^n` for `n` in the normal f64 range, built from its bits.
fn pow2(n: i64) -> f64 {
    debug_assert!((-1022..=1023).contains(&n));
    f64::from_bits(((n + 1023) as u64) << 52)
}

/// e^x, deterministic; relative error below 1e-12 before the final rounding to f32.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    let x = f64::from(x.clamp(-104.0, 88.7));
    let n = (x / LN2).round();
    let r = x - n * LN2; // |r| <= ln2/2
                         // Taylor series to r^13/13!: the remainder is below 1e-15 for |r| <= 0.347.
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for k in 1..=13 {
        term = term * r / f64::from(k);
        sum += term;
    }
    (sum * pow2(n as i64)) as f32
}

/// ln x for finite x > 0, deterministic; NaN otherwise.
pub fn ln(x: f32) -> f32 {
    if x.is_nan() || x <= 0.0 || x.is_infinite() {
        return f32::NAN;
    }
    let x = f64::from(x);
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // in [1, 2)
                                                                           // ln m = 2 atanh(t), t = (m−1)/(m+1) in [0, 1/3]; the series to t^31 is exact to 1e-16.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut power = t;
    let mut sum = 0.0f64;
    for k in 0..16 {
        sum += power / f64::from(2 * k + 1);
        power *= t2;
    }
    (2.0 * sum + e as f64 * LN2) as f32
}

/// tanh x via the deterministic exp.
pub fn tanh(x: f32) -> f32 {
    let e = f64::from(exp(-2.0 * x.abs()));
    let t = ((1.0 - e) / (1.0 + e)) as f32;
    t.copysign(x)
}

/// The logistic function via the deterministic exp.
pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + f64::from(exp(-x)))) as f32
}

/// base^n by squaring, in a fixed order of multiplications.
pub fn powu(base: f64, mut n: u64) -> f64 {
    let mut acc = 1.0f64;
    let mut b = base;
    while n > 0 {
        if n & 1 == 1 {
            acc *= b;
        }
        b *= b;
        n >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_platform_functions() {
        let mut x = -90.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            assert!((a - b).abs() <= b * 2e-7, "exp({x}) = {a}, libm {b}");
            x += 0.173;
        }
        let mut y = 1e-30f32;
        while y < 1e30 {
            let (a, b) = (ln(y), y.ln());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "ln({y}) = {a}, libm {b}"
            );
            y *= 1.7;
        }
        for v in [-5.0f32, -0.3, 0.0, 0.2, 4.0] {
            assert!((tanh(v) - v.tanh()).abs() < 1e-6);
            assert!((sigmoid(v) - 1.0 / (1.0 + (-v).exp())).abs() < 1e-6);
        }
        assert_eq!(powu(2.0, 10), 1024.0);
        assert_eq!(powu(0.5, 0), 1.0);
        assert!((powu(0.999, 1000) - 0.999f64.powf(1000.0)).abs() < 1e-12);
    }
}
