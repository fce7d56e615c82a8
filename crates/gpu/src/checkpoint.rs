//! Checkpoints: the full training state (parameters, optimizer state, step) as safetensors,
//! identified by the BLAKE3 hash of those bytes.
//!
//! Tensors are named `param.NNN` and `state.NNN` (f32, little-endian); one metadata entry,
//! `trainmesh`, holds `{"format":1,"model":<spec hash>,"step":<n>}`. safetensors sorts tensors by
//! dtype and name, and a single metadata entry has one JSON rendering, so the same state always
//! encodes to the same bytes — the property exact verification rests on. Decoding validates every
//! shape against the model before anything is trusted.

use crate::error::GpuError;
use crate::executor::Tensor;
use crate::hash::Hash32;
use crate::spec::Model;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The largest checkpoint accepted: parameters and two optimizer slots at the spec bound.
pub const CHECKPOINT_BYTES_MAX: usize = (crate::spec::PARAMS_MAX as usize) * 4 * 3 + (1 << 20);

/// Training state at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub step: u64,
    pub params: Vec<Tensor>,
    pub opt_state: Vec<Tensor>,
    /// The outer optimizer's momentum of a job trained in rounds by several trainers (one tensor
    /// per parameter, `outer.NNN`; see [`crate::outer`]); empty otherwise, and then not in the
    /// encoding at all.
    pub outer: Vec<Tensor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: u32,
    model: Hash32,
    step: u64,
}

fn bad(reason: impl Into<String>) -> GpuError {
    GpuError::CheckpointMalformed {
        reason: reason.into(),
    }
}

impl TrainState {
    /// The canonical safetensors encoding.
    pub fn encode(&self, model: &Model) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("param.{i:03}"), t))
            .chain(
                self.opt_state
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("state.{i:03}"), t)),
            )
            .chain(
                self.outer
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("outer.{i:03}"), t)),
            )
            .map(|(name, t)| {
                let raw: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, t.shape.clone(), raw)
            })
            .collect();
        let views = bytes.iter().map(|(name, shape, raw)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), raw).expect("shape matches data"),
            )
        });
        let meta = Meta {
            format: 1,
            model: model.spec.hash(),
            step: self.step,
        };
        let info = HashMap::from([(
            "trainmesh".to_string(),
            serde_json::to_string(&meta).expect("meta serializes"),
        )]);
        safetensors::serialize(views, Some(info)).expect("in-memory serialization")
    }

    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self, model: &Model) -> Hash32 {
        Hash32::of(&self.encode(model))
    }

    /// Decodes `bytes` after checking them against `expected`.
    pub fn decode_verified(
        bytes: &[u8],
        expected: &Hash32,
        model: &Model,
    ) -> Result<Self, GpuError> {
        let actual = Hash32::of(bytes);
        if actual != *expected {
            return Err(GpuError::CheckpointHashMismatch {
                expected: *expected,
                actual,
            });
        }
        Self::decode(bytes, model)
    }

    /// Decodes and validates a checkpoint for `model`.
    pub fn decode(bytes: &[u8], model: &Model) -> Result<Self, GpuError> {
        let max = model.checkpoint_bytes_max();
        if bytes.len() > max {
            return Err(bad(format!(
                "{} bytes, at most {max} for this model",
                bytes.len()
            )));
        }
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("safetensors: {e}")))?;
        let meta_json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("trainmesh"))
            .ok_or_else(|| bad("no trainmesh metadata"))?;
        let meta: Meta =
            serde_json::from_str(meta_json).map_err(|e| bad(format!("metadata: {e}")))?;
        if meta.format != 1 {
            return Err(bad(format!("format {}, expected 1", meta.format)));
        }
        if meta.model != model.spec.hash() {
            return Err(bad(format!(
                "checkpoint is for model {}, not {}",
                meta.model,
                model.spec.hash()
            )));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("safetensors: {e}")))?;
        let expected_shapes = model.param_shapes();
        let read = |name: &str, shape: &[usize]| -> Result<Tensor, GpuError> {
            let view = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(bad(format!(
                    "{name}: {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            if data.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("{name} holds a non-finite value")));
            }
            Ok(Tensor {
                shape: shape.to_vec(),
                data,
            })
        };
        let params = expected_shapes
            .iter()
            .enumerate()
            .map(|(i, s)| read(&format!("param.{i:03}"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let state_count = st
            .names()
            .iter()
            .filter(|n| n.starts_with("state."))
            .count();
        let outer_count = st
            .names()
            .iter()
            .filter(|n| n.starts_with("outer."))
            .count();
        if st.names().len() != params.len() + state_count + outer_count
            || state_count % params.len() != 0
            || state_count / params.len() > 2
            || (outer_count != 0 && outer_count != params.len())
        {
            return Err(bad(format!(
                "{} tensors do not form parameters plus optimizer state",
                st.names().len()
            )));
        }
        let opt_state = (0..state_count)
            .map(|i| read(&format!("state.{i:03}"), &expected_shapes[i % params.len()]))
            .collect::<Result<Vec<_>, _>>()?;
        let outer = (0..outer_count)
            .map(|i| read(&format!("outer.{i:03}"), &expected_shapes[i]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrainState {
            step: meta.step,
            params,
            opt_state,
            outer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::init_params;
    use crate::spec::ModelSpec;

    fn model() -> Model {
        ModelSpec::from_json(
            br#"{"kind":"mlp","input":4,"classes":3,"hidden":[{"units":5,"activation":"relu"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_stable_hash() {
        let m = model();
        let params = init_params(&m, 3);
        let s = TrainState {
            step: 12,
            opt_state: params.clone(),
            outer: params.clone(),
            params,
        };
        let bytes = s.encode(&m);
        assert_eq!(bytes, s.encode(&m));
        assert_eq!(
            TrainState::decode_verified(&bytes, &Hash32::of(&bytes), &m).unwrap(),
            s
        );
    }

    #[test]
    fn malformed_checkpoints_are_rejected() {
        let m = model();
        let s = TrainState {
            step: 0,
            params: init_params(&m, 3),
            opt_state: vec![],
            outer: vec![],
        };
        let bytes = s.encode(&m);
        let h = Hash32::of(&bytes);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            TrainState::decode_verified(&flipped, &h, &m),
            Err(GpuError::CheckpointHashMismatch { .. })
        ));
        assert!(matches!(
            TrainState::decode(&bytes[..bytes.len() - 3], &m),
            Err(GpuError::CheckpointMalformed { .. })
        ));
        assert!(matches!(
            TrainState::decode(b"garbage", &m),
            Err(GpuError::CheckpointMalformed { .. })
        ));
        let other = ModelSpec::from_json(br#"{"kind":"logistic","input":4,"classes":3}"#).unwrap();
        assert!(matches!(
            TrainState::decode(&bytes, &other),
            Err(GpuError::CheckpointMalformed { .. })
        ));
        let mut nan = s.clone();
        nan.params[0].data[0] = f32::NAN;
        assert!(TrainState::decode(&nan.encode(&m), &m).is_err());
    }
}
