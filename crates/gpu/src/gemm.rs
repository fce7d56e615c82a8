//! The deterministic CPU matrix product behind the executor's dense layers: `C += A·B` where
//! every element of C is accumulated as `((c + a₀b₀) + a₁b₁) + …` — one product and one rounded
//! addition per k, k ascending, exactly the order of the plain axpy loop it replaces.
//!
//! Speed comes from how the work is arranged, never from a different arithmetic:
//!
//! - **Packing and cache blocking** (Goto's scheme): A is copied into panels of [`MR`] rows and
//!   B into panels of [`NR`] columns, both k-major, in blocks of [`KC`] values of k (an A block of
//!   [`MC`] × KC stays in L2, a B panel of KC × NR in L1); each is packed once per block. A block of k continues from the value
//!   the previous block left in C, so blocking does not split any sum.
//! - **Register blocking**: an MR × NR tile of C lives in registers across its k loop (6 × 16
//!   floats: twelve AVX2 registers); each k broadcasts MR values of A against NR of B.
//! - **Runtime dispatch** (`multiversion`): the same code is compiled for AVX-512, AVX2 and the
//!   baseline, and the best the CPU has runs. Only the vector *width* changes between them: each
//!   lane does the same multiplications and additions in the same order, and Rust never fuses
//!   `a·b + c` into an FMA (that would round once instead of twice), so every version, and every
//!   machine, gives the same bits.
//! - **Threads split C** into blocks of rows (on a persistent rayon pool per thread count); each
//!   element is still summed by one thread in the same order, so the thread count changes no bit
//!   either.
//!
//! Padding lanes of partial tiles compute on zeros and are never stored.

use multiversion::multiversion;

/// Rows of C per register tile.
pub const MR: usize = 6;
/// Columns of C per register tile.
pub const NR: usize = 16;
/// Values of k per packed block.
pub const KC: usize = 256;
/// Rows of A per packed block.
pub const MC: usize = 128;

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
/// order (see the module doc), on up to `threads` threads with the same bits for any count.
pub fn gemm_acc(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "C is not m×n");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // Below about a million multiply-adds a thread costs more than it saves.
    let threads = if m * n * k < (1 << 20) {
        1
    } else {
        threads.clamp(1, m.div_ceil(MR))
    };
    if threads == 1 {
        with_scratch(|buf| gemm_rows(a, b, c, 0, buf));
        return;
    }
    // Whole register tiles per thread, as evenly as possible, on a persistent pool of `threads`
    // workers (spawning threads per product cost more than the product on a busy machine).
    let tiles = m.div_ceil(MR);
    let rows_per = tiles.div_ceil(threads) * MR;
    pool(threads).install(|| {
        rayon::scope(|s| {
            for (t, block) in c.chunks_mut(rows_per * n).enumerate() {
                s.spawn(move |_| with_scratch(|buf| gemm_rows(a, b, block, t * rows_per, buf)));
            }
        })
    });
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
fn pool(threads: usize) -> std::sync::Arc<rayon::ThreadPool> {
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

/// Rows `row0 .. row0 + c.len() / n` of C (one thread's share). Loop order (Goto/BLIS): for each
/// block of k, pack all of B's block once (panels of NR columns), then for each block of MC rows
/// pack A's block, and run the register tile over every (B panel, A panel) pair; a B panel
/// (KC × NR floats, 16 KiB) stays in L1 while the A panels stream from L2.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "aarch64+neon"))]
fn gemm_rows<'a>(a: MatRef<'a>, b: MatRef<'a>, c: &mut [f32], row0: usize, scratch: &mut Vec<f32>) {
    let (k, n) = (a.cols, b.cols);
    let rows = c.len() / n;
    let b_panels = n.div_ceil(NR);
    let kc_max = KC.min(k);
    let b_len = b_panels * NR * kc_max;
    let need = b_len + MC.min(rows).div_ceil(MR) * MR * kc_max;
    if scratch.len() < need {
        // Every entry a panel uses is written by the packing before it is read.
        scratch.resize(need, 0.0);
    }
    let (bpack, apack) = scratch.split_at_mut(b_len);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        pack_b(b, pc, kc, &mut bpack[..b_panels * NR * kc]);
        for ic in (0..rows).step_by(MC) {
            let mc = MC.min(rows - ic);
            let a_panels = mc.div_ceil(MR);
            pack_a(a, row0 + ic, mc, pc, kc, &mut apack[..a_panels * MR * kc]);
            for (q, bpanel) in bpack.chunks_exact(NR * kc).take(b_panels).enumerate() {
                let jc = q * NR;
                let nr = NR.min(n - jc);
                for (p, apanel) in apack.chunks_exact(MR * kc).take(a_panels).enumerate() {
                    let r0 = ic + p * MR;
                    let mr = MR.min(rows - r0);
                    let mut acc = [[0.0f32; NR]; MR];
                    for (r, accr) in acc.iter_mut().enumerate().take(mr) {
                        accr[..nr].copy_from_slice(&c[(r0 + r) * n + jc..][..nr]);
                    }
                    micro(apanel, bpanel, &mut acc);
                    for (r, accr) in acc.iter().enumerate().take(mr) {
                        c[(r0 + r) * n + jc..][..nr].copy_from_slice(&accr[..nr]);
                    }
                }
            }
        }
    }
}

/// B's rows `pc .. pc + kc` as panels of NR columns, each k-major (`dst[q][kk][cc]`), the columns
/// past the last zero.
#[inline(always)]
fn pack_b(b: MatRef<'_>, pc: usize, kc: usize, dst: &mut [f32]) {
    let n = b.cols;
    for (q, panel) in dst.chunks_exact_mut(NR * kc).enumerate() {
        let jc = q * NR;
        let nr = NR.min(n - jc);
        if b.col_stride == 1 {
            for (kk, d) in panel.chunks_exact_mut(NR).enumerate() {
                let start = (pc + kk) * b.row_stride + jc;
                d[..nr].copy_from_slice(&b.data[start..start + nr]);
                d[nr..].iter_mut().for_each(|v| *v = 0.0);
            }
        } else {
            if nr < NR {
                panel.iter_mut().for_each(|v| *v = 0.0);
            }
            for cc in 0..nr {
                let col = &b.data[(jc + cc) * b.col_stride..];
                for (kk, d) in panel.iter_mut().skip(cc).step_by(NR).enumerate() {
                    *d = col[(pc + kk) * b.row_stride];
                }
            }
        }
    }
}

/// A's rows `r0 .. r0 + mc` × columns `pc .. pc + kc` as panels of MR rows, each k-major
/// (`dst[p][kk][r]`), the rows past the last zero.
#[inline(always)]
fn pack_a(a: MatRef<'_>, r0: usize, mc: usize, pc: usize, kc: usize, dst: &mut [f32]) {
    for (p, panel) in dst.chunks_exact_mut(MR * kc).enumerate() {
        let pr = p * MR;
        let mr = MR.min(mc - pr);
        if a.row_stride == 1 {
            // Transposed storage: the MR rows of one k are contiguous.
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                let start = (pc + kk) * a.col_stride + r0 + pr;
                d[..mr].copy_from_slice(&a.data[start..start + mr]);
                d[mr..].iter_mut().for_each(|v| *v = 0.0);
            }
        } else {
            if mr < MR {
                panel.iter_mut().for_each(|v| *v = 0.0);
            }
            for r in 0..mr {
                let row = &a.data[(r0 + pr + r) * a.row_stride + pc * a.col_stride..];
                for (kk, d) in panel.iter_mut().skip(r).step_by(MR).enumerate() {
                    *d = row[kk * a.col_stride];
                }
            }
        }
    }
}

/// The register tile: `acc[r][c] += a[k][r] · b[k][c]` for k in order.
#[inline(always)]
fn micro(a: &[f32], b: &[f32], acc: &mut [[f32; NR]; MR]) {
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let ak: &[f32; MR] = ak.try_into().expect("MR values");
        let bk: &[f32; NR] = bk.try_into().expect("NR values");
        for (accr, &av) in acc.iter_mut().zip(ak) {
            for (o, &bv) in accr.iter_mut().zip(bk) {
                *o += av * bv;
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
                    c[i * b.cols + j] += av * b.at(kk, j);
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

    #[test]
    fn bit_identical_to_the_sequential_loop_for_every_shape_layout_and_thread_count() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 16),
            (17, 300, 33),
            (70, 513, 10),
            (130, 257, 129),
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
