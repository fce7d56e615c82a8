//! What trainers and evaluators decode from other nodes: dataset shards (also uploaded through
//! the gateway), model specs (in every job on the ledger) and checkpoints (fetched from trainers).

use std::sync::OnceLock;

use trainmesh_gpu::checkpoint::TrainState;
use trainmesh_gpu::dataset::{decode_shard, Samples};
use trainmesh_gpu::hash::Hash32;
use trainmesh_gpu::spec::{Model, ModelSpec, PARAMS_MAX};

/// A shard checked against its own hash, as the gateway's upload does; what decodes re-encodes
/// to the same bytes (a shard's hash names one dataset).
pub fn shard(data: &[u8]) {
    let Ok(samples) = decode_shard(data, &Hash32::of(data)) else {
        return;
    };
    assert_eq!(samples.encode_shard(), data, "a shard does not re-encode");
    let twice = Samples::concat(&[samples.clone(), samples.clone()])
        .expect("a shard concatenates with itself");
    assert_eq!(twice.len(), 2 * samples.len());
}

/// A job's model spec: bounded, and its canonical JSON parses back to the same model.
pub fn model_spec(data: &[u8]) {
    let Ok(model) = ModelSpec::from_json(data) else {
        return;
    };
    assert!(model.param_count() as u64 <= PARAMS_MAX, "{model:?}");
    let again = ModelSpec::from_json(model.spec.to_json().as_bytes())
        .expect("a valid spec's canonical JSON is valid");
    assert_eq!(again, model);
    for layer in &model.layers {
        let (fan_in, fan_out) = layer.fans();
        assert!(fan_in > 0 && fan_out > 0, "{model:?}");
    }
}

/// The models checkpoints are decoded for (the first input byte picks one).
pub const CHECKPOINT_MODELS: [&str; 3] = [
    r#"{"kind":"logistic","input":4,"classes":3}"#,
    r#"{"kind":"mlp","input":4,"hidden":[{"units":5,"activation":"relu"}],"classes":3}"#,
    r#"{"kind":"cnn","input":{"channels":1,"height":5,"width":5},"conv":[{"filters":2,"kernel":3,"activation":"relu"}],"hidden":[],"classes":2}"#,
];

pub fn checkpoint_models() -> &'static [Model] {
    static MODELS: OnceLock<Vec<Model>> = OnceLock::new();
    MODELS.get_or_init(|| {
        CHECKPOINT_MODELS
            .iter()
            .map(|j| ModelSpec::from_json(j.as_bytes()).expect("the fixed specs are valid"))
            .collect()
    })
}

/// A checkpoint for one of [`CHECKPOINT_MODELS`]; what decodes encodes to a checkpoint that
/// decodes to the same state.
pub fn checkpoint(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let models = checkpoint_models();
    let model = &models[usize::from(pick) % models.len()];
    let Ok(state) = TrainState::decode(bytes, model) else {
        return;
    };
    let again = TrainState::decode(&state.encode(model), model)
        .expect("a decoded checkpoint's encoding decodes");
    assert_eq!(again, state);
}
