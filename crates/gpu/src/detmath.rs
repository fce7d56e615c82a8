//! Transcendental functions with a fixed sequence of IEEE operations, so that every platform —
//! every CPU, and every GPU through the WGSL port in `kernels/exact.wgsl` — computes the same
//! bits. The platform `exp`/`ln` (libm, or a GPU's builtins) differ in the last bits, which would
//! break exact checkpoint hashes between a trainer and an evaluator.
//!
//! One definition for both sides: every function is a fixed sequence of f32 operations that IEEE
//! 754 rounds the same everywhere — `+ − ×`, fused multiply-add ([`fma`]), division, `floor`,
//! comparisons and bit manipulation — with no f64 (WGSL has none) and no operation left for a
//! compiler to fuse (Rust never contracts `a * b + c`; the WGSL port makes each product opaque
//! where one is followed by an addition). Results below `f32::MIN_POSITIVE` are flushed to zero
//! on both sides, so a device that flushes subnormals computes the same thing. Accuracy: `exp`
//! and `ln` within 2 ulp, `tanh` and `sigmoid` within 4e-7 absolute of the exact values.

/// ln 2 split so that `n·LN2_HI` is exact for |n| < 2^9 (Cody & Waite).
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0.693145751953125
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286068e-6
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// exp is defined on this range; outside it the result is clamped (and never subnormal).
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.7;

/// `2^n` for `n` in -126..=127, built from its bits.
fn pow2(n: i32) -> f32 {
    debug_assert!((-126..=127).contains(&n));
    f32::from_bits(((n + 127) as u32) << 23)
}

/// Zero for anything below the smallest normal (and NaN kept).
fn flush(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

/// `a·b + c` rounded once: the instruction when `HW` (a caller compiled with the FMA feature),
/// [`fma`] in software otherwise. Both are IEEE `fusedMultiplyAdd`: the same bits.
#[inline(always)]
fn fma_as<const HW: bool>(a: f32, b: f32, c: f32) -> f32 {
    if HW {
        a.mul_add(b, c)
    } else {
        fma(a, b, c)
    }
}

/// e^x for x clamped to [-87.3, 88.7]; NaN for NaN.
pub fn exp(x: f32) -> f32 {
    exp_as::<false>(x)
}

/// [`exp`] with its fused multiply-adds from the instruction (`HW`, for callers compiled with
/// the FMA feature) or from software: the same bits either way.
#[inline(always)]
pub fn exp_as<const HW: bool>(x: f32) -> f32 {
    if x.is_nan() {
        return f32::NAN;
    }
    let x = x.clamp(EXP_MIN, EXP_MAX);
    // x = n·ln2 + r, |r| ≤ ln2/2 (n in -126..=128).
    let n = (x * LOG2_E + 0.5).floor();
    let r = fma_as::<HW>(-n, LN2_HI, x);
    let r = fma_as::<HW>(-n, LN2_LO, r);
    // Taylor to r^7: the truncation is below 6e-9 relative on |r| ≤ 0.347.
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = fma_as::<HW>(p, r, c);
    }
    let n = n as i32;
    let n1 = n.min(127);
    flush(p * pow2(n1) * pow2(n - n1))
}

/// ln x for x ≥ `f32::MIN_POSITIVE` (and +∞); −∞ for 0 and subnormals, NaN below 0 or for NaN.
pub fn ln(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x < f32::MIN_POSITIVE {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    // x = 2^e · m with m in [√½, √2).
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.172: the series to s^11.
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let mut q = 1.0 / 11.0;
    for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        q = fma(q, z, c);
    }
    let ln_m = (2.0 * s) * q;
    let e = e as f32;
    fma(e, LN2_HI, fma(e, LN2_LO, ln_m))
}

/// tanh x: an odd Taylor polynomial below |x| = 0.5, (1 − e)/(1 + e) with e = exp(−2|x|) above.
pub fn tanh(x: f32) -> f32 {
    tanh_as::<false>(x)
}

/// [`tanh`] with hardware or software fused multiply-adds (see [`exp_as`]).
#[inline(always)]
pub fn tanh_as<const HW: bool>(x: f32) -> f32 {
    let a = x.abs();
    let t = if a < 0.5 {
        // tanh a = a + a³·P(a²), P to the a^15 term: below 1e-8 relative at a = 0.5.
        let z = a * a;
        let mut p = -929_569.0 / 638_512_875.0;
        for c in [
            21_844.0 / 6_081_075.0,
            -1_382.0 / 155_925.0,
            62.0 / 2_835.0,
            -17.0 / 315.0,
            2.0 / 15.0,
            -1.0 / 3.0,
        ] {
            p = fma_as::<HW>(p, z, c);
        }
        fma_as::<HW>(a * z, p, a)
    } else if a < 9.0 {
        let e = exp_as::<HW>(-2.0 * a);
        (1.0 - e) / (1.0 + e)
    } else {
        1.0
    };
    t.copysign(x)
}

/// The logistic function 1/(1 + e^−x).
pub fn sigmoid(x: f32) -> f32 {
    flush(1.0 / (1.0 + exp(-x)))
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

/// cos(π·p) for p in [0, 1] (clamped), in f64: reflected to [0, ½] (cos(π·p) = −cos(π·(1 − p)))
/// and summed as a Taylor series to x²⁰ (truncation below 1e-15 on [0, π/2]) by Horner's rule,
/// every operation a correctly rounded one, so every machine gets the same bits.
pub fn cos_pi(p: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let (p, sign) = if p > 0.5 { (1.0 - p, -1.0) } else { (p, 1.0) };
    let x = std::f64::consts::PI * p;
    let z = x * x;
    // Σ (−1)^n z^n/(2n)! for n = 0..=10, innermost first.
    let mut acc = 0.0f64;
    for n in (0..=10u32).rev() {
        let mut fact = 1.0f64;
        for k in 1..=(2 * n) {
            fact *= f64::from(k);
        }
        let c = if n % 2 == 0 { 1.0 / fact } else { -1.0 / fact };
        acc = acc * z + c;
    }
    sign * acc
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
        let mut x = EXP_MIN;
        while x < 88.0 {
            let (a, b) = (f64::from(exp(x)), f64::from(x).exp());
            assert!((a - b).abs() <= b * 2.4e-7, "exp({x}) = {a}, exact {b}");
            x += 0.0173;
        }
        // Clamped and flushed, never subnormal.
        assert_eq!(exp(-200.0), exp(EXP_MIN));
        assert!(exp(EXP_MIN) >= f32::MIN_POSITIVE);
        assert_eq!(exp(1e30), exp(EXP_MAX));
        assert!(exp(f32::NAN).is_nan());
        let mut y = f32::MIN_POSITIVE;
        while y < 1e38 {
            let (a, b) = (f64::from(ln(y)), f64::from(y).ln());
            assert!(
                (a - b).abs() <= 2.4e-7 * b.abs().max(0.5),
                "ln({y}) = {a}, exact {b}"
            );
            y *= 1.37;
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
        let mut v = -12.0f32;
        while v < 12.0 {
            let exact_tanh = f64::from(v).tanh();
            let exact_sigmoid = 1.0 / (1.0 + (-f64::from(v)).exp());
            assert!((f64::from(tanh(v)) - exact_tanh).abs() < 4e-7, "tanh({v})");
            assert!(
                (f64::from(sigmoid(v)) - exact_sigmoid).abs() < 4e-7,
                "sigmoid({v})"
            );
            v += 0.0037;
        }
        // The instruction's fused multiply-adds give the software's bits.
        let mut w = -90.0f32;
        while w < 90.0 {
            assert_eq!(exp_as::<true>(w).to_bits(), exp(w).to_bits(), "exp({w})");
            assert_eq!(
                tanh_as::<true>(w / 8.0).to_bits(),
                tanh(w / 8.0).to_bits(),
                "tanh({w})"
            );
            w += 0.000_731;
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(powu(2.0, 10), 1024.0);
        for i in 0..=1000 {
            let p = f64::from(i) / 1000.0;
            assert!(
                (cos_pi(p) - (std::f64::consts::PI * p).cos()).abs() < 1e-14,
                "cos_pi({p})"
            );
        }
        assert_eq!(cos_pi(0.0), 1.0);
        assert_eq!(cos_pi(1.0), -1.0);
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
