// Checkpoint distance: per-workgroup partial sums of (u − v)², grid-stride, tree-reduced in
// workgroup memory. The host adds the partials in f64.
struct Dims { len: u32, pad0: u32, pad1: u32, pad2: u32 }

@group(0) @binding(0) var<storage, read> u: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> sh: array<f32, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    var s = 0.0;
    var i = gid.x;
    let stride = groups.x * 256u;
    loop {
        if (i >= dims.len) {
            break;
        }
        let d = u[i] - v[i];
        s = s + d * d;
        i = i + stride;
    }
    sh[lid.x] = s;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off = off >> 1u) {
        if (lid.x < off) {
            sh[lid.x] = sh[lid.x] + sh[lid.x + off];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        partial[wid.x] = sh[0];
    }
}
