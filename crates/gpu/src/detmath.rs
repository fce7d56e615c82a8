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

/// `a·b + c` with one rounding (IEEE 754 `fusedMultiplyAdd` for f32, round to nearest even), in
/// f64 arithmetic only — the same bits as a hardware FMA instruction, for CPUs without one.
///
/// The product of two f32 is exact in f64; the sum `s = p + c` is rounded, and TwoSum (Knuth)
/// gives its exact error `e`. Replacing `s` by its round-to-odd counterpart (when `e ≠ 0` and the
/// last bit of `s` is even, the neighbour on `e`'s side) keeps 53 bits that round to the correct
/// f32: rounding to odd at p + 2 or more bits, then to nearest at p bits, is correct rounding
/// (Boldo & Melquiond). Nothing here overflows for finite inputs; an infinite or NaN sum is
/// returned as is (NaN payloads are not part of the contract: checkpoints reject non-finite
/// values).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let p = f64::from(a) * f64::from(b);
    let c = f64::from(c);
    let s = p + c;
    let c1 = s - p;
    let p1 = s - c1;
    let e = (p - p1) + (c - c1);
    let bits = s.to_bits();
    // Away from zero when the error has the sign of s, toward zero otherwise.
    let toward = if (e > 0.0) == (s > 0.0) {
        bits + 1
    } else {
        bits - 1
    };
    let odd = if e != 0.0 && bits & 1 == 0 && s.is_finite() {
        f64::from_bits(toward)
    } else {
        s
    };
    odd as f32
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

    /// Bits of a random-ish f32 from a counter: full mantissas, exponents across the range that
    /// matters (subnormal to large), both signs, and the special cases.
    fn spread(i: u64) -> f32 {
        let h = (i ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let h = (h ^ (h >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let h = h ^ (h >> 29);
        match h % 16 {
            0 => [
                0.0,
                -0.0,
                1.0,
                -1.0,
                f32::MIN_POSITIVE,
                1e-45,
                f32::MAX,
                0.5,
            ][(h >> 8) as usize % 8],
            // Exponents near 0 so that products and sums interact (cancellation, ties).
            1..=11 => f32::from_bits(
                (h >> 32) as u32 & 0x807f_ffff | (((h >> 12) % 40 + 107) as u32) << 23,
            ),
            _ => f32::from_bits((h >> 32) as u32),
        }
    }

    #[test]
    fn software_fma_equals_the_correctly_rounded_one() {
        // f32::mul_add is IEEE fusedMultiplyAdd (the instruction where there is one, else libm).
        let mut checked = 0;
        for i in 0..3_000_000u64 {
            let (a, b, c) = (spread(3 * i), spread(3 * i + 1), spread(3 * i + 2));
            // Sums built to cancel: c close to -a·b.
            let c = if i % 3 == 0 {
                -(a * b) * (1.0 + spread(i) * 1e-7)
            } else {
                c
            };
            let want = a.mul_add(b, c);
            let got = fma(a, b, c);
            if want.is_nan() {
                assert!(got.is_nan(), "fma({a:e}, {b:e}, {c:e}) = {got:e}, want NaN");
                continue;
            }
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "fma({a:e}, {b:e}, {c:e}) = {got:e}, want {want:e}"
            );
            checked += 1;
        }
        // Double-rounding traps: a·b = 2ⁿ + 1 (641 · 6700417 = 2³² + 1, 20857 · 411849 = 2³³ + 1)
        // scaled so that its top bit is the rounding bit of c + a·b and its bottom bit lies below
        // f64 precision. Rounding the f64 sum to f32 again gets these wrong; fma must not.
        let mut traps = 0;
        for (i, (am, bm, n)) in [(641u32, 6_700_417u32, 32), (20_857, 411_849, 33)]
            .into_iter()
            .cycle()
            .take(20_000)
            .enumerate()
        {
            let i = i as u64;
            let q = (spread(i).to_bits() % 60) as i32 - 100;
            let a = am as f32 * 2f32.powi(q / 2);
            let b = bm as f32 * 2f32.powi(q - q / 2);
            let sig = (1 << 23) | (spread(i + 7).to_bits() & 0x7f_ffff);
            let mut c = sig as f32 * 2f32.powi(q + n + 1);
            if i % 2 == 1 {
                c = -c;
            }
            let (a, c) = if i % 4 >= 2 { (-a, -c) } else { (a, c) };
            let want = a.mul_add(b, c);
            let naive = (f64::from(a) * f64::from(b) + f64::from(c)) as f32;
            traps += usize::from(naive != want);
            assert_eq!(
                fma(a, b, c).to_bits(),
                want.to_bits(),
                "fma({a:e}, {b:e}, {c:e})"
            );
        }
        assert!(traps > 1000, "only {traps} double-rounding cases");
        // Exact ties at f32 precision, and products that underflow.
        for (a, b, c) in [
            (1.0 + f32::EPSILON, 1.0 - f32::EPSILON / 2.0, 0.0),
            (1.0 + f32::EPSILON, 1.0 + f32::EPSILON, -1.0),
            (1e-30, 1e-20, 0.0),
            (-1e-30, 1e-20, 0.0),
            (1e-30, 1e-20, -0.0),
            (3.0, 1.0 / 3.0, -1.0),
            (f32::MAX, 2.0, -f32::MAX),
            (f32::MAX, 1.0 + f32::EPSILON, 0.0),
        ] {
            assert_eq!(
                fma(a, b, c).to_bits(),
                a.mul_add(b, c).to_bits(),
                "fma({a:e}, {b:e}, {c:e})"
            );
        }
        assert!(checked > 2_000_000);
    }
}
