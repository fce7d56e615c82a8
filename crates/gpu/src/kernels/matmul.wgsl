// C (m×n) = A (m×k) · B (k×n), row-major f32. The capability benchmark a trainer runs at
// registration. Each 16×16 workgroup computes a 64×64 tile of C, each thread a 4×4 block held in
// registers; A and B advance through workgroup memory 16 columns / rows at a time.
struct Dims { m: u32, k: u32, n: u32, pad: u32 }

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

// sa[kk * 64 + r]: A tile, transposed; sb[kk * 64 + col]: B tile.
var<workgroup> sa: array<f32, 1024>;
var<workgroup> sb: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        acc[i] = 0.0;
    }
    for (var t = 0u; t < dims.k; t = t + 16u) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = tid + l * 256u;
            let ar = e / 16u;
            let ac = e % 16u;
            var av = 0.0;
            if (row0 + ar < dims.m && t + ac < dims.k) {
                av = a[(row0 + ar) * dims.k + t + ac];
            }
            sa[ac * 64u + ar] = av;
            let br = e / 64u;
            let bc = e % 64u;
            var bv = 0.0;
            if (t + br < dims.k && col0 + bc < dims.n) {
                bv = b[(t + br) * dims.n + col0 + bc];
            }
            sb[br * 64u + bc] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let a0 = sa[kk * 64u + lid.y * 4u];
            let a1 = sa[kk * 64u + lid.y * 4u + 1u];
            let a2 = sa[kk * 64u + lid.y * 4u + 2u];
            let a3 = sa[kk * 64u + lid.y * 4u + 3u];
            for (var j = 0u; j < 4u; j = j + 1u) {
                let bv = sb[kk * 64u + lid.x * 4u + j];
                acc[j] = acc[j] + a0 * bv;
                acc[4u + j] = acc[4u + j] + a1 * bv;
                acc[8u + j] = acc[8u + j] + a2 * bv;
                acc[12u + j] = acc[12u + j] + a3 * bv;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let r = row0 + lid.y * 4u + i;
            let col = col0 + lid.x * 4u + j;
            if (r < dims.m && col < dims.n) {
                c[r * dims.n + col] = acc[i * 4u + j];
            }
        }
    }
}
