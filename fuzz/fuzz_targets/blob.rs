#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trainmesh_fuzzing::blob(data));
