//! The deterministic CPU matrix product behind the executor's dense layers: `C += A·B` where
//! every element of C is accumulated as `fma(a_{k−1}, b_{k−1}, … fma(a₁, b₁, fma(a₀, b₀, c)))` —
//! one fused multiply-add (a single rounding, IEEE 754 `fusedMultiplyAdd`) per k, k ascending.
//!
//! Speed comes from how the work is arranged, never from a different arithmetic:
//!
//! - **Packing and cache blocking** (Goto's scheme): A is copied into panels of `MR` rows and
//!   B into panels of `NR` columns, both k-major, in blocks of at most [`KC`] values of k (an A
//!   block of about [`MC`] rows stays in L2, a B panel in L1); each is packed once per block. A
//!   block of k continues from the value the previous block left in C (an f32, exactly what the
//!   register held), so blocking does not split any sum.
//! - **Register blocking**: an `MR × NR` tile of C lives in registers across its k loop; each k
//!   broadcasts MR values of A against NR of B.
//! - **Kernels per instruction set** ([`Isa`], chosen at run time): AVX2 + FMA (a 6 × 16 tile,
//!   twelve ymm accumulators), AVX-512 (8 × 32, sixteen zmm accumulators), and the portable build
//!   (6 × 16; on x86-64 without FMA `f32::mul_add` is the C library's correctly rounded `fmaf`,
//!   slow but exact; AArch64 has the instruction). A fused multiply-add is exactly specified by
//!   IEEE 754, so hardware and software give the same bits; the tile shape only decides which
//!   elements are computed together, never the order of any one element's terms. Rust never
//!   contracts a separate `a * b + c` into an FMA, so the code outside this module keeps its
//!   own two roundings on every machine too.
//! - **Threads split C** into blocks of rows (on a persistent rayon pool per thread count); each
//!   element is still summed by one thread in the same order, so the thread count changes no bit
//!   either.
//!
//! Padding lanes of partial tiles compute on zeros and are never stored.

use multiversion::multiversion;
use std::cell::Cell;

/// Values of k per packed block, at most (the blocks of a product are made equal).
pub const KC: usize = 256;
/// Rows of A per packed block, about (rounded down to whole register tiles).
pub const MC: usize = 128;

/// The instruction sets the kernel is built for. They differ in speed only: every one computes
/// every element of C with the same fused multiply-adds in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust for the build's baseline target (x86-64: SSE2, where `f32::mul_add` is a call
    /// to libm's `fmaf`; AArch64: NEON with its FMA instruction).
    Portable,
    /// x86-64 with AVX2 and FMA: 6 × 16 register tile.
    Avx2,
    /// x86-64 with AVX-512F (and AVX2, FMA): 8 × 32 register tile.
    Avx512,
}

impl Isa {
    /// Every kernel this crate has, available here or not.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU runs the kernel (the portable one runs everywhere).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The kernels this CPU runs, portable first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest kernel this CPU runs: the one [`gemm_acc`] uses unless [`with_isa`] says
    /// otherwise.
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().expect("the portable kernel"))
    }

    /// `(MR, NR)`: the register tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Portable | Isa::Avx2 => (6, 16),
            Isa::Avx512 => (8, 32),
        }
    }
}

thread_local! {
    static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// Runs `f` with every product this thread starts computed by `isa`'s kernel (for tests and
/// benchmarks; the bits are the same). A kernel this CPU lacks runs as the portable build.
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set(self.0);
        }
    }
    let _restore = Restore(FORCED.replace(Some(isa)));
    f()
}

/// The kernel products on this thread use now.
pub fn current_isa() -> Isa {
    FORCED.get().unwrap_or_else(Isa::best)
}

/// A read-only strided view of a matrix: element (r, c) is `data[r * row_stride + c * col_stride]`.
/// A transposed view is the same data with the strides swapped.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix data too short");
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    #[cfg(test)]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// `C += A·B` for a row-major `C` of `a.rows × b.cols`, each element summed over k in ascending
/// order with fused multiply-adds (see the module doc), on up to `threads` threads with the same
/// bits for any count, with the kernel [`current_isa`] names.
pub fn gemm_acc(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize) {
    gemm_acc_isa(current_isa(), a, b, c, threads)
}

/// Measured GFLOP/s of this GEMM on one thread: the best of `reps` timed `n×n·n×n` products
/// after one warm-up (what a worker without a device registers with, and what the benches print).
pub fn measured_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..=reps {
        let t = std::time::Instant::now();
        gemm_set(
            MatRef::row_major(&a, n, n),
            MatRef::row_major(&a, n, n),
            &mut c,
            1,
        );
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!(c[0].is_finite());
    2.0 * (n as f64).powi(3) / best.max(1e-9) / 1e9
}

/// `C = A·B`: [`gemm_acc`] onto zeros, without reading C (the same bits as zeroing C first —
/// every sum starts from +0 — without the pass over C).
pub fn gemm_set(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize) {
    gemm_isa(current_isa(), a, b, c, threads, true)
}

/// [`gemm_acc`] with the kernel of `isa` (the portable build where this CPU lacks it).
pub fn gemm_acc_isa(isa: Isa, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize) {
    gemm_isa(isa, a, b, c, threads, false)
}

/// `C = A·B` when `set`, `C += A·B` otherwise.
fn gemm_isa(isa: Isa, a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize, set: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "C is not m×n");
    if set && k == 0 {
        c.fill(0.0);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (mr, _) = isa.tile();
    // Below about a million multiply-adds a thread costs more than it saves.
    let threads = if m * n * k < (1 << 20) {
        1
    } else {
        threads.clamp(1, m.div_ceil(mr))
    };
    if threads == 1 {
        with_scratch(|buf| gemm_rows(isa, a, b, c, 0, set, buf));
        return;
    }
    // Each thread packs the part of B its outputs need and the part of A: splitting the rows of
    // C costs every thread all of B (k × n), splitting the columns all of A (m × k), so the
    // wider side is split. Either way each output element is computed by one thread, in order.
    let (_, nr) = isa.tile();
    if n > m && n >= 2 * nr {
        return gemm_cols_parallel(isa, a, b, c, threads.min(n / nr), set);
    }
    // Whole register tiles per thread, as evenly as possible, on a persistent pool of `threads`
    // workers (spawning threads per product cost more than the product on a busy machine).
    let tiles = m.div_ceil(mr);
    let rows_per = tiles.div_ceil(threads) * mr;
    pool(threads).install(|| {
        rayon::scope(|s| {
            for (t, block) in c.chunks_mut(rows_per * n).enumerate() {
                s.spawn(move |_| {
                    with_scratch(|buf| gemm_rows(isa, a, b, block, t * rows_per, set, buf))
                });
            }
        })
    });
}

/// [`gemm_acc_isa`] with the columns of C split between `threads` workers, in whole register
/// tiles; each works on a copy of its columns (C's rows are not contiguous per worker), which
/// it writes back.
fn gemm_cols_parallel(
    isa: Isa,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    threads: usize,
    set: bool,
) {
    let (m, n) = (a.rows, b.cols);
    let (_, nr) = isa.tile();
    let cols_per = n.div_ceil(nr).div_ceil(threads) * nr;
    let mut parts: Vec<(usize, usize, Vec<f32>)> = (0..n)
        .step_by(cols_per)
        .map(|j0| {
            let w = cols_per.min(n - j0);
            let mut part = Vec::with_capacity(m * w);
            if set {
                part.resize(m * w, 0.0);
            } else {
                for row in c.chunks_exact(n) {
                    part.extend_from_slice(&row[j0..j0 + w]);
                }
            }
            (j0, w, part)
        })
        .collect();
    pool(threads).install(|| {
        rayon::scope(|s| {
            for (j0, w, part) in parts.iter_mut() {
                let bsub = MatRef {
                    data: &b.data[*j0 * b.col_stride..],
                    cols: *w,
                    ..b
                };
                s.spawn(move |_| with_scratch(|buf| gemm_rows(isa, a, bsub, part, 0, set, buf)));
            }
        })
    });
    for (j0, w, part) in &parts {
        for (row, prow) in c.chunks_exact_mut(n).zip(part.chunks_exact(*w)) {
            row[*j0..*j0 + *w].copy_from_slice(prow);
        }
    }
}

/// Runs `f` with this thread's packing buffer, kept from call to call (fresh large allocations
/// cost page faults).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The shared pool of `threads` workers (one per distinct count asked for).
pub(crate) fn pool(threads: usize) -> std::sync::Arc<rayon::ThreadPool> {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<BTreeMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("trainmesh-gemm-{i}"))
                    .build()
                    .expect("a thread pool"),
            )
        })
        .clone()
}

/// Rows `row0 .. row0 + c.len() / n` of C (one thread's share) with `isa`'s kernel.
/// With `set`, C's previous contents are not read (the sums start from zero).
fn gemm_rows(
    isa: Isa,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    row0: usize,
    set: bool,
    s: &mut Vec<f32>,
) {
    match isa {
        Isa::Portable => rows::<6, 16, PortableFma>(a, b, c, row0, set, s),
        Isa::Avx2 => rows_avx2(a, b, c, row0, set, s),
        Isa::Avx512 => rows_avx512(a, b, c, row0, set, s),
    }
}

/// The AVX2 + FMA build (the portable one on a CPU without them).
#[multiversion(targets("x86_64+avx2+fma"))]
fn rows_avx2<'a>(
    a: MatRef<'a>,
    b: MatRef<'a>,
    c: &mut [f32],
    row0: usize,
    set: bool,
    s: &mut Vec<f32>,
) {
    rows::<6, 16, HardwareFma>(a, b, c, row0, set, s)
}

/// The AVX-512 build (the portable one on a CPU without it).
#[multiversion(targets("x86_64+avx512f+avx2+fma"))]
fn rows_avx512<'a>(
    a: MatRef<'a>,
    b: MatRef<'a>,
    c: &mut [f32],
    row0: usize,
    set: bool,
    s: &mut Vec<f32>,
) {
    rows::<8, 32, HardwareFma>(a, b, c, row0, set, s)
}

/// How a build computes one fused multiply-add; every implementation is IEEE 754's
/// `fusedMultiplyAdd` (one rounding), so they give the same bits.
trait Fma {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// The instruction (the builds that use it are compiled with it enabled).
struct HardwareFma;

impl Fma for HardwareFma {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// The instruction where the baseline target has one (AArch64, RISC-V with F, an x86 build
/// with FMA enabled), otherwise [`crate::detmath::fma`] — exact in f64 arithmetic, and
/// independent of the C library's `fmaf`.
struct PortableFma;

impl Fma for PortableFma {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        if cfg!(any(
            target_arch = "aarch64",
            all(target_arch = "riscv64", target_feature = "f"),
            all(
                any(target_arch = "x86_64", target_arch = "x86"),
                target_feature = "fma"
            )
        )) {
            a.mul_add(b, c)
        } else {
            crate::detmath::fma(a, b, c)
        }
    }
}

/// Loop order (Goto/BLIS): for each block of k, pack all of B's block once (panels of NR
/// columns), then for each block of about MC rows pack A's block, and run the register tile over
/// every (B panel, A panel) pair; a B panel (kc × NR floats) stays in L1 while the A panels
/// stream from L2. The blocks of k are made equal (784 = 4 × 196, not 3 × 256 + 16), which
/// changes no bit: C carries each sum from one block to the next.
#[inline(always)]
fn rows<const MR: usize, const NR: usize, F: Fma>(
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    row0: usize,
    set: bool,
    scratch: &mut Vec<f32>,
) {
    let (k, n) = (a.cols, b.cols);
    let rows = c.len() / n;
    let kc_max = k.div_ceil(k.div_ceil(KC));
    let mc_max = (MC / MR).max(1) * MR;
    let b_panels = n.div_ceil(NR);
    let b_len = b_panels * NR * kc_max;
    let need = b_len + mc_max.min(rows.div_ceil(MR) * MR) * kc_max;
    if scratch.len() < need {
        // Every entry a panel uses is written by the packing before it is read.
        scratch.resize(need, 0.0);
    }
    let (bpack, apack) = scratch.split_at_mut(b_len);
    let mut pc = 0;
    while pc < k {
        let kc = kc_max.min(k - pc);
        // The first block of a `set` product starts from zeros instead of C.
        let load = !(set && pc == 0);
        let bpack = &mut bpack[..b_panels * NR * kc];
        pack_b::<NR>(b, pc, kc, bpack);
        for ic in (0..rows).step_by(mc_max) {
            let mc = mc_max.min(rows - ic);
            let a_panels = mc.div_ceil(MR);
            let apack = &mut apack[..a_panels * MR * kc];
            pack_a::<MR>(a, row0 + ic, mc, pc, kc, apack);
            for (q, bpanel) in bpack.chunks_exact(NR * kc).enumerate() {
                let jc = q * NR;
                let nr = NR.min(n - jc);
                for (p, apanel) in apack.chunks_exact(MR * kc).enumerate() {
                    let r0 = ic + p * MR;
                    let mr = MR.min(rows - r0);
                    tile::<MR, NR, F>(apanel, bpanel, &mut c[r0 * n + jc..], n, mr, nr, load);
                }
            }
        }
        pc += kc;
    }
}

/// One register tile: loads C's `mr × nr` block (at `c[0]`, rows `n` apart; zeros instead when
/// not `load`), runs the k loop, stores it back. Full tiles move whole rows; partial ones go
/// through a zero-padded copy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile<const MR: usize, const NR: usize, F: Fma>(
    apanel: &[f32],
    bpanel: &[f32],
    c: &mut [f32],
    n: usize,
    mr: usize,
    nr: usize,
    load: bool,
) {
    if mr == MR && nr == NR {
        let mut acc = [[0.0f32; NR]; MR];
        if load {
            for (r, row) in acc.iter_mut().enumerate() {
                *row = c[r * n..r * n + NR].try_into().expect("NR values");
            }
        }
        let acc = micro::<MR, NR, F>(apanel, bpanel, acc);
        for (r, row) in acc.iter().enumerate() {
            c[r * n..r * n + NR].copy_from_slice(row);
        }
    } else {
        let mut buf = [[0.0f32; NR]; MR];
        if load {
            for (r, row) in buf.iter_mut().enumerate().take(mr) {
                row[..nr].copy_from_slice(&c[r * n..r * n + nr]);
            }
        }
        let acc = micro::<MR, NR, F>(apanel, bpanel, buf);
        for (r, row) in acc.iter().enumerate().take(mr) {
            c[r * n..r * n + nr].copy_from_slice(&row[..nr]);
        }
    }
}

/// The register tile's k loop: `acc[r][c] = fma(a[k][r], b[k][c], acc[r][c])` for k in order.
#[inline(always)]
fn micro<const MR: usize, const NR: usize, F: Fma>(
    a: &[f32],
    b: &[f32],
    mut acc: [[f32; NR]; MR],
) -> [[f32; NR]; MR] {
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let ak: &[f32; MR] = ak.try_into().expect("MR values");
        let bk: &[f32; NR] = bk.try_into().expect("NR values");
        for (accr, &av) in acc.iter_mut().zip(ak) {
            for (o, &bv) in accr.iter_mut().zip(bk) {
                *o = F::fma(av, bv, *o);
            }
        }
    }
    acc
}

/// B's rows `pc .. pc + kc` as panels of NR columns, each k-major (`dst[q][kk][cc]`), the columns
/// past the last zero.
#[inline(always)]
fn pack_b<const NR: usize>(b: MatRef<'_>, pc: usize, kc: usize, dst: &mut [f32]) {
    let n = b.cols;
    for (q, panel) in dst.chunks_exact_mut(NR * kc).enumerate() {
        let jc = q * NR;
        let nr = NR.min(n - jc);
        if b.col_stride == 1 {
            for (kk, d) in panel.chunks_exact_mut(NR).enumerate() {
                let src = &b.data[(pc + kk) * b.row_stride + jc..];
                if nr == NR {
                    let d: &mut [f32; NR] = d.try_into().expect("NR values");
                    *d = src[..NR].try_into().expect("NR values");
                } else {
                    d[..nr].copy_from_slice(&src[..nr]);
                    d[nr..].fill(0.0);
                }
            }
        } else {
            if nr < NR {
                panel.fill(0.0);
            }
            for cc in 0..nr {
                let col = &b.data[(jc + cc) * b.col_stride + pc * b.row_stride..];
                if b.row_stride == 1 {
                    for (d, &v) in panel[cc..].iter_mut().step_by(NR).zip(&col[..kc]) {
                        *d = v;
                    }
                } else {
                    for (kk, d) in panel[cc..].iter_mut().step_by(NR).enumerate() {
                        *d = col[kk * b.row_stride];
                    }
                }
            }
        }
    }
}

/// A's rows `r0 .. r0 + mc` × columns `pc .. pc + kc` as panels of MR rows, each k-major
/// (`dst[p][kk][r]`), the rows past the last zero.
#[inline(always)]
fn pack_a<const MR: usize>(
    a: MatRef<'_>,
    r0: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    dst: &mut [f32],
) {
    for (p, panel) in dst.chunks_exact_mut(MR * kc).enumerate() {
        let pr = p * MR;
        let mr = MR.min(mc - pr);
        if a.row_stride == 1 {
            // Transposed storage: the MR rows of one k are contiguous.
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                let src = &a.data[(pc + kk) * a.col_stride + r0 + pr..];
                if mr == MR {
                    let d: &mut [f32; MR] = d.try_into().expect("MR values");
                    *d = src[..MR].try_into().expect("MR values");
                } else {
                    d[..mr].copy_from_slice(&src[..mr]);
                    d[mr..].fill(0.0);
                }
            }
        } else {
            if mr < MR {
                panel.fill(0.0);
            }
            for r in 0..mr {
                let row = &a.data[(r0 + pr + r) * a.row_stride + pc * a.col_stride..];
                if a.col_stride == 1 {
                    for (d, &v) in panel[r..].iter_mut().step_by(MR).zip(&row[..kc]) {
                        *d = v;
                    }
                } else {
                    for (kk, d) in panel[r..].iter_mut().step_by(MR).enumerate() {
                        *d = row[kk * a.col_stride];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order the module promises, written as the plain loop.
    fn reference(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
        for i in 0..a.rows {
            for kk in 0..a.cols {
                let av = a.at(i, kk);
                for j in 0..b.cols {
                    let o = &mut c[i * b.cols + j];
                    *o = av.mul_add(b.at(kk, j), *o);
                }
            }
        }
    }

    fn pseudo(len: usize, salt: u32) -> Vec<f32> {
        // Values with full mantissas, so any change of order shows in the bits.
        (0..len as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) >> 8;
                h as f32 / (1u32 << 23) as f32 - 1.0 + 1e-3 * (i % 7) as f32
            })
            .collect()
    }

    /// A random matrix entry: mostly full-mantissa values of mixed magnitude and sign, with exact
    /// zeros of both signs, subnormals and large values mixed in.
    fn entry(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
        use rand::Rng;
        match rng.gen_range(0..100) {
            0..=3 => 0.0,
            4..=5 => -0.0,
            6 => f32::from_bits(rng.gen_range(1..0x0080_0000)) * if rng.gen() { 1.0 } else { -1.0 },
            7 => rng.gen_range(-1e15f32..1e15),
            _ => rng.gen_range(-1.0f32..1.0) * 2f32.powi(rng.gen_range(-8..8)),
        }
    }

    /// A dimension: small, random, or next to a multiple of a tile or block size (ragged edges).
    fn dim(rng: &mut rand_chacha::ChaCha8Rng, max: usize) -> usize {
        use rand::Rng;
        match rng.gen_range(0..3) {
            0 => rng.gen_range(1..=12),
            1 => rng.gen_range(1..=max),
            _ => {
                let unit = [6, 8, 16, 32, KC][rng.gen_range(0..5)];
                let base = unit * rng.gen_range(1..=(max / unit).max(1));
                (base + rng.gen_range(0..3)).saturating_sub(1).max(1)
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_same_bits_on_random_shapes() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("TRAINMESH_GEMM_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!(
            "seed {seed} (replay: TRAINMESH_GEMM_SEED={seed} cargo test -p trainmesh-gpu --lib every_kernel)"
        );
        let kernels = Isa::available();
        println!("kernels on this CPU: {kernels:?} of {:?}", Isa::ALL);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for case in 0..40 {
            let (m, k, n) = (dim(&mut rng, 130), dim(&mut rng, 600), dim(&mut rng, 130));
            let (ta, tb) = (rng.gen::<bool>(), rng.gen::<bool>());
            let ad: Vec<f32> = (0..m * k).map(|_| entry(&mut rng)).collect();
            let bd: Vec<f32> = (0..k * n).map(|_| entry(&mut rng)).collect();
            let init: Vec<f32> = (0..m * n).map(|_| entry(&mut rng)).collect();
            let a = if ta {
                MatRef::row_major(&ad, k, m).t()
            } else {
                MatRef::row_major(&ad, m, k)
            };
            let b = if tb {
                MatRef::row_major(&bd, n, k).t()
            } else {
                MatRef::row_major(&bd, k, n)
            };
            let mut want = init.clone();
            reference(a, b, &mut want);
            // C = A·B onto whatever C held: the sums start from +0.
            let mut want_set = vec![0.0f32; m * n];
            reference(a, b, &mut want_set);
            for &isa in &kernels {
                for threads in [1, 2, 3] {
                    for set in [false, true] {
                        let mut got = if set {
                            vec![f32::NAN; m * n]
                        } else {
                            init.clone()
                        };
                        gemm_isa(isa, a, b, &mut got, threads, set);
                        let want = if set { &want_set } else { &want };
                        let diff = got
                            .iter()
                            .zip(want)
                            .position(|(x, y)| x.to_bits() != y.to_bits());
                        assert!(
                            diff.is_none(),
                            "seed {seed} case {case}: ({m},{k},{n}) tA={ta} tB={tb} {isa:?} \
                             t={threads} set={set}: element {diff:?} differs"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bit_identical_to_the_sequential_loop_for_every_shape_layout_and_thread_count() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 16),
            (17, 300, 33),
            (70, 513, 10),
            (130, 257, 129),
            (40, 300, 200),
            (7, 1000, 300),
        ] {
            for transpose_a in [false, true] {
                for transpose_b in [false, true] {
                    let ad = pseudo(m * k, 1);
                    let bd = pseudo(k * n, 2);
                    let a = if transpose_a {
                        MatRef::row_major(&ad, k, m).t()
                    } else {
                        MatRef::row_major(&ad, m, k)
                    };
                    let b = if transpose_b {
                        MatRef::row_major(&bd, n, k).t()
                    } else {
                        MatRef::row_major(&bd, k, n)
                    };
                    let init = pseudo(m * n, 3);
                    let mut want = init.clone();
                    reference(a, b, &mut want);
                    for threads in [1, 2, 3] {
                        let mut got = init.clone();
                        gemm_acc(a, b, &mut got, threads);
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "({m},{k},{n}) tA={transpose_a} tB={transpose_b} t={threads}"
                        );
                    }
                }
            }
        }
    }
}
