//! The crashes whose fix is pending (`fuzz/regressions_pending/<target>/`, and
//! `trainmesh_fuzzing::pending`): replayed with the targets' skipping off, each must still panic.
//! Once one passes, this test fails naming it: move it to `fuzz/regressions/` and drop its entry.
//!
//! `cargo test -p trainmesh-fuzzing --test pending -- --ignored`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use trainmesh_fuzzing::{pending, TARGETS};

#[test]
#[ignore = "replays inputs that are expected to panic"]
fn pending_regressions_still_fail() {
    pending::stop_skipping();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions_pending");
    let (mut still_failing, mut fixed) = (0, Vec::new());
    for (target, run) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable folder").path();
            let data = std::fs::read(&path).expect("a readable input");
            match catch_unwind(AssertUnwindSafe(|| run(&data))) {
                Ok(()) => fixed.push(path.display().to_string()),
                Err(_) => still_failing += 1,
            }
        }
    }
    assert!(
        fixed.is_empty(),
        "these pass now; move them to fuzz/regressions/: {fixed:?}"
    );
    println!("{still_failing} pending regressions still fail");
}
