// Exact arithmetic, shared bit for bit with the CPU executor (src/detmath.rs and IEEE `/`, `sqrt`).
// Prepended to every kernel that needs it. WGSL promises correctly rounded `+ − ×` only: its `/`
// and `sqrt` may be off by ulps, its `exp`/`log` more, and a compiler may fuse a product into a
// following addition. So here:
// - `rn(p)` hands a product on only after it was rounded: the bits go through an XOR with
//   `EXACT_ZERO`, a zero the kernel loads from a uniform at run time, which no compiler can see
//   through (write `rn(a * b) + c` wherever the CPU rounds the product before adding);
// - `div_rn` and `sqrt_rn` compute IEEE 754's correctly rounded results in integer arithmetic
//   (subnormal operands and results included), so they equal any CPU's `/` and `sqrt`;
// - `exact_exp`, `exact_ln`, `exact_tanh`, `exact_sigmoid` are detmath.rs's operation sequences,
//   with its constants as bit patterns (no constant is re-derived by a shader compiler).
// Fused multiply-adds go through `ffma`: WGSL's `fma` where the device computes it with one
// rounding (probed when the device is opened), else `fma_f64` (exact_f64.wgsl) where the device
// has f64 and it passes the same probe, else `fma_soft` in integer arithmetic. The
// conformance suite checks all of it on each device.

var<private> EXACT_ZERO: u32;

// Set by the host when the device's own `fma` failed the conformance probe (it is unfused, or
// not correctly rounded): every fused multiply-add then runs in integer arithmetic.
override SOFT_FMA: bool = false;
// Set by the host when the device's own `fma` failed and the f64 one (exact_f64.wgsl) passed.
override F64_FMA: bool = false;
// A deliberately wrong variant, for the conformance tests only: multiply-adds with two roundings.
override UNFUSED_VARIANT: bool = false;

fn rn(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) ^ EXACT_ZERO);
}

fn is_nan_bits(b: u32) -> bool {
    return (b & 0x7fffffffu) > 0x7f800000u;
}

// +0 below the smallest normal (detmath's `flush`), decided on the bits.
fn flush_subnormal(x: f32) -> f32 {
    if ((bitcast<u32>(x) & 0x7f800000u) == 0u) {
        return 0.0;
    }
    return x;
}

// Splits a finite non-zero magnitude into a significand in [2^23, 2^24) and an unbiased
// exponent, normalizing subnormals: value = m · 2^(e − 23).
fn unpack(b: u32) -> vec2<i32> {
    var e = i32((b >> 23u) & 0xffu);
    var m = b & 0x007fffffu;
    if (e == 0) {
        // Subnormal: shift the leading one up to bit 23.
        let shift = i32(countLeadingZeros(m)) - 8;
        m = m << u32(shift);
        e = 1 - shift;
    } else {
        m = m | 0x00800000u;
    }
    return vec2<i32>(i32(m), e - 127);
}

// Rounds q · 2^(e − 24) (q < 2^26, with `sticky` for bits below q) to nearest even, packs it with
// `sign`; handles overflow to infinity and subnormal or zero results.
fn round_pack(sign: u32, q_in: u32, e: i32, sticky_in: bool) -> f32 {
    var q = q_in;
    var sticky = sticky_in;
    // Normalize q to [2^24, 2^25): 24 result bits and one round bit.
    var ee = e;
    if (q >= 0x02000000u) {
        sticky = sticky || (q & 1u) != 0u;
        q = q >> 1u;
        ee = ee + 1;
    }
    // The biased exponent of the result if it is normal.
    let biased = ee + 127;
    var shift = 1u;
    if (biased < 1) {
        // Subnormal: drop 1 − biased more bits (all of them beyond 25).
        shift = u32(min(2 - biased, 26));
    }
    let dropped_mask = (1u << (shift - 1u)) - 1u;
    sticky = sticky || (q & dropped_mask) != 0u;
    let round_bit = (q >> (shift - 1u)) & 1u;
    var mant = q >> shift;
    if (round_bit == 1u && (sticky || (mant & 1u) == 1u)) {
        mant = mant + 1u;
    }
    if (biased < 1) {
        // A carry into bit 23 makes it the smallest normal, as the encoding says.
        return bitcast<f32>(sign | mant);
    }
    // mant holds the implicit bit (2^23); a carry to 2^24 bumps the exponent field.
    let bits = (u32(biased - 1) << 23u) + mant;
    if (bits >= 0x7f800000u) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    return bitcast<f32>(sign | bits);
}

// a / b, correctly rounded (IEEE 754, round to nearest even).
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & 0x80000000u;
    let aa = ua & 0x7fffffffu;
    let ab = ub & 0x7fffffffu;
    if (is_nan_bits(ua) || is_nan_bits(ub) || (aa == 0u && ab == 0u)
        || (aa == 0x7f800000u && ab == 0x7f800000u)) {
        return bitcast<f32>(0x7fc00000u);
    }
    if (aa == 0x7f800000u || ab == 0u) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (aa == 0u || ab == 0x7f800000u) {
        return bitcast<f32>(sign);
    }
    let pa = unpack(aa);
    let pb = unpack(ab);
    var ma = u32(pa.x);
    let mb = u32(pb.x);
    var e = pa.y - pb.y;
    if (ma < mb) {
        ma = ma << 1u;
        e = e - 1;
    }
    // ma/mb in [1, 2): 25 quotient bits by restoring division, then the remainder as sticky.
    var q = 0u;
    var r = ma;
    for (var i = 0u; i < 25u; i = i + 1u) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    return round_pack(sign, q, e, r != 0u);
}

// √x, correctly rounded; −0 for −0, NaN below zero.
fn sqrt_rn(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if (is_nan_bits(u) || (u > 0x80000000u)) {
        return bitcast<f32>(0x7fc00000u);
    }
    if ((u & 0x7fffffffu) == 0u || u == 0x7f800000u) {
        return x;
    }
    let p = unpack(u);
    var m = u32(p.x);
    var e = p.y;
    if ((e & 1) != 0) {
        m = m << 1u;
        e = e - 1;
    }
    // m · 2^-23 in [1, 4): its root in [1, 2) to 25 bits, digit by digit over the bit pairs of
    // (m << 1) · 2^24 (13 pairs from m, 12 of zeros).
    let m2 = m << 1u;
    var root = 0u;
    var rem = 0u;
    for (var i = 0u; i < 25u; i = i + 1u) {
        var pair = 0u;
        if (i < 13u) {
            pair = (m2 >> (24u - 2u * i)) & 3u;
        }
        rem = (rem << 2u) | pair;
        let trial = (root << 2u) | 1u;
        if (rem >= trial) {
            rem = rem - trial;
            root = (root << 1u) | 1u;
        } else {
            root = root << 1u;
        }
    }
    return round_pack(0u, root, e / 2, rem != 0u);
}

// 64-bit unsigned integers as (hi, lo) pairs, for the exact fused multiply-add below.
fn u64_shl(x: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return x;
    }
    if (s >= 64u) {
        return vec2<u32>(0u, 0u);
    }
    if (s >= 32u) {
        return vec2<u32>(x.y << (s - 32u), 0u);
    }
    return vec2<u32>((x.x << s) | (x.y >> (32u - s)), x.y << s);
}

// Right shift, OR-ing every bit shifted out into the lowest bit (sticky "jamming").
fn u64_shr_jam(x: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return x;
    }
    if (s >= 64u) {
        return vec2<u32>(0u, select(0u, 1u, (x.x | x.y) != 0u));
    }
    var out: vec2<u32>;
    var lost: u32;
    if (s >= 32u) {
        out = vec2<u32>(0u, x.x >> (s - 32u));
        lost = x.y | select(0u, x.x << (64u - s), s > 32u);
    } else {
        out = vec2<u32>(x.x >> s, (x.y >> s) | (x.x << (32u - s)));
        lost = x.y << (32u - s);
    }
    if (lost != 0u) {
        out.y = out.y | 1u;
    }
    return out;
}

fn u64_lt(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

fn u64_add(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.y + b.y;
    return vec2<u32>(a.x + b.x + select(0u, 1u, lo < a.y), lo);
}

fn u64_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x - select(0u, 1u, a.y < b.y), a.y - b.y);
}

// The 48-bit product of two 24-bit significands.
fn mul24(a: u32, b: u32) -> vec2<u32> {
    let a1 = a >> 16u;
    let a0 = a & 0xffffu;
    let b1 = b >> 16u;
    let b0 = b & 0xffffu;
    let mid = a1 * b0 + a0 * b1;
    let low = a0 * b0;
    let lo = low + (mid << 16u);
    let carry = select(0u, 1u, lo < low);
    return vec2<u32>(a1 * b1 + (mid >> 16u) + carry, lo);
}

// a·b + c with one rounding (IEEE 754 fusedMultiplyAdd, round to nearest even), in integer
// arithmetic: the same bits as a hardware FMA, on devices whose `fma` is not one.
fn fma_soft(a: f32, b: f32, c: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let uc = bitcast<u32>(c);
    let nan = bitcast<f32>(0x7fc00000u);
    if (is_nan_bits(ua) || is_nan_bits(ub) || is_nan_bits(uc)) {
        return nan;
    }
    let sp = (ua ^ ub) & 0x80000000u;
    let sc = uc & 0x80000000u;
    let aa = ua & 0x7fffffffu;
    let ab = ub & 0x7fffffffu;
    let ac = uc & 0x7fffffffu;
    if (aa == 0x7f800000u || ab == 0x7f800000u) {
        if (aa == 0u || ab == 0u || (ac == 0x7f800000u && sc != sp)) {
            return nan;
        }
        return bitcast<f32>(sp | 0x7f800000u);
    }
    if (ac == 0x7f800000u) {
        return c;
    }
    if (aa == 0u || ab == 0u) {
        if (ac != 0u) {
            return c;
        }
        return bitcast<f32>(sp & sc);
    }
    let pa = unpack(aa);
    let pb = unpack(ab);
    // The product: P · 2^(ep − 46 − 8) with P < 2^48, moved up 8 bits for guard bits.
    var x = u64_shl(mul24(u32(pa.x), u32(pb.x)), 8u);
    var ex = pa.y + pb.y - 54;
    var sx = sp;
    if (ac != 0u) {
        // The addend: mc · 2^(ec − 23), as a 56-bit value on the same footing.
        let pc = unpack(ac);
        var y = u64_shl(vec2<u32>(0u, u32(pc.x)), 32u);
        var ey = pc.y - 55;
        var sy = sc;
        // Align the one of lower exponent to the other.
        if (ey > ex) {
            let t = x;
            x = y;
            y = t;
            let te = ex;
            ex = ey;
            ey = te;
            let ts = sx;
            sx = sy;
            sy = ts;
        }
        y = u64_shr_jam(y, u32(min(ex - ey, 64)));
        if (sx == sy) {
            x = u64_add(x, y);
        } else if (u64_lt(x, y)) {
            x = u64_sub(y, x);
            sx = sy;
        } else {
            x = u64_sub(x, y);
        }
        if (x.x == 0u && x.y == 0u) {
            return 0.0;
        }
    }
    // x · 2^ex, exact or jammed: its top bit k, then 25 bits of it and the rest as sticky.
    var k: i32;
    if (x.x != 0u) {
        k = 63 - i32(countLeadingZeros(x.x));
    } else {
        k = 31 - i32(countLeadingZeros(x.y));
    }
    var q: u32;
    var sticky = false;
    if (k >= 24) {
        let s = u32(k - 24);
        let kept = u64_shr_plain(x, s);
        sticky = !u64_eq(u64_shl(kept, s), x);
        q = kept.y;
    } else {
        q = x.y << u32(24 - k);
    }
    return round_pack(sx, q, k + ex, sticky);
}

fn u64_eq(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x == b.x && a.y == b.y;
}

fn u64_shr_plain(x: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) {
        return x;
    }
    if (s >= 64u) {
        return vec2<u32>(0u, 0u);
    }
    if (s >= 32u) {
        return vec2<u32>(0u, x.x >> (s - 32u));
    }
    return vec2<u32>(x.x >> s, (x.y >> s) | (x.x << (32u - s)));
}

// The fused multiply-add of every exact kernel.
fn ffma(a: f32, b: f32, c: f32) -> f32 {
    if (UNFUSED_VARIANT) {
        return rn(a * b) + c;
    }
    if (F64_FMA) {
        return fma_f64(a, b, c);
    }
    if (SOFT_FMA) {
        return fma_soft(a, b, c);
    }
    return fma(a, b, c);
}

fn pow2i(n: i32) -> f32 {
    return bitcast<f32>(u32(n + 127) << 23u);
}

fn exact_exp(x0: f32) -> f32 {
    if (is_nan_bits(bitcast<u32>(x0))) {
        return x0;
    }
    let x = clamp(x0, bitcast<f32>(0xc2ae999au), bitcast<f32>(0x42b16666u));
    let n = floor(rn(x * bitcast<f32>(0x3fb8aa3bu)) + 0.5);
    var r = ffma(-n, bitcast<f32>(0x3f317200u), x);
    r = ffma(-n, bitcast<f32>(0x35bfbe8eu), r);
    var p = bitcast<f32>(0x39500d01u);
    p = ffma(p, r, bitcast<f32>(0x3ab60b61u));
    p = ffma(p, r, bitcast<f32>(0x3c088889u));
    p = ffma(p, r, bitcast<f32>(0x3d2aaaabu));
    p = ffma(p, r, bitcast<f32>(0x3e2aaaabu));
    p = ffma(p, r, 0.5);
    p = ffma(p, r, 1.0);
    p = ffma(p, r, 1.0);
    let ni = i32(n);
    let n1 = min(ni, 127);
    return flush_subnormal(p * pow2i(n1) * pow2i(ni - n1));
}

fn exact_ln(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if (is_nan_bits(u) || u > 0x80000000u) {
        return bitcast<f32>(0x7fc00000u);
    }
    if ((u & 0x7f800000u) == 0u) {
        return bitcast<f32>(0xff800000u);
    }
    if (u == 0x7f800000u) {
        return x;
    }
    var e = i32((u >> 23u) & 0xffu) - 127;
    var m = bitcast<f32>((u & 0x007fffffu) | 0x3f800000u);
    if (m > bitcast<f32>(0x3fb504f3u)) {
        m = m * 0.5;
        e = e + 1;
    }
    let f = m - 1.0;
    let s = div_rn(f, 2.0 + f);
    let z = s * s;
    var q = bitcast<f32>(0x3dba2e8cu);
    q = ffma(q, z, bitcast<f32>(0x3de38e39u));
    q = ffma(q, z, bitcast<f32>(0x3e124925u));
    q = ffma(q, z, bitcast<f32>(0x3e4ccccdu));
    q = ffma(q, z, bitcast<f32>(0x3eaaaaabu));
    q = ffma(q, z, 1.0);
    let ln_m = (2.0 * s) * q;
    let ef = f32(e);
    return ffma(ef, bitcast<f32>(0x3f317200u), ffma(ef, bitcast<f32>(0x35bfbe8eu), ln_m));
}

fn exact_tanh(x: f32) -> f32 {
    let a = abs(x);
    var t: f32;
    if (a < 0.5) {
        let z = a * a;
        var p = bitcast<f32>(0xbabed1b2u);
        p = ffma(p, z, bitcast<f32>(0x3b6b69e8u));
        p = ffma(p, z, bitcast<f32>(0xbc11371bu));
        p = ffma(p, z, bitcast<f32>(0x3cb327a4u));
        p = ffma(p, z, bitcast<f32>(0xbd5d0dd1u));
        p = ffma(p, z, bitcast<f32>(0x3e088889u));
        p = ffma(p, z, bitcast<f32>(0xbeaaaaabu));
        t = ffma(a * z, p, a);
    } else if (a < 9.0) {
        let e = exact_exp(-2.0 * a);
        t = div_rn(1.0 - e, 1.0 + e);
    } else {
        t = 1.0;
    }
    return bitcast<f32>(bitcast<u32>(t) | (bitcast<u32>(x) & 0x80000000u));
}

fn exact_sigmoid(x: f32) -> f32 {
    return flush_subnormal(div_rn(1.0, 1.0 + exact_exp(-x)));
}
