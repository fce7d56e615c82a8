//! Writes the seed corpus into `fuzz/corpus/<target>/`, each file named by the BLAKE3 of its
//! bytes (so writing again adds nothing): `cargo run -p trainmesh-fuzzing --example write_corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, inputs) in trainmesh_fuzzing::seeds::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for input in &inputs {
            let name = &blake3::hash(input).to_hex()[..16];
            std::fs::write(dir.join(name), input)?;
        }
        println!("{target}: {} seeds", inputs.len());
    }
    Ok(())
}
