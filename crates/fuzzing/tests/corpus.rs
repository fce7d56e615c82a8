//! Replays, on the stable toolchain, every input the fuzz targets keep: the seed corpus
//! (`fuzz/corpus/<target>/`) and every crash found so far (`fuzz/regressions/<target>/`), through
//! the same functions the libFuzzer targets run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use trainmesh_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The names of the sub-folders (or `.rs` files) of `fuzz/<kind>/`.
fn names(kind: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.expect("a readable folder").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect()
}

#[test]
fn corpus_and_regressions_replay_without_a_panic() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let seeds = inputs("corpus", target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ holds no seed");
        for path in seeds.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(path).expect("a readable input");
            eprintln!("{target}: {}", path.display());
            run(&data);
            replayed += 1;
        }
    }
    println!("replayed {replayed} inputs of {} targets", TARGETS.len());
}

#[test]
fn every_target_has_its_libfuzzer_wrapper_and_nothing_else_does() {
    let listed: BTreeSet<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(names("fuzz_targets"), listed, "fuzz/fuzz_targets/*.rs");
    for kind in ["corpus", "regressions"] {
        let unknown: Vec<String> = names(kind).difference(&listed).cloned().collect();
        assert!(
            unknown.is_empty(),
            "fuzz/{kind}/ names no target: {unknown:?}"
        );
    }
}
