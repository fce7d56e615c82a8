#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trainmesh_fuzzing::gateway_submit(data));
