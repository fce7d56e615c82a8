//! The outer step of a round trained by several trainers (DiLoCo: Douillard et al., 2023): each
//! of K trainers runs H inner steps from the same global checkpoint on its own slice of the data
//! ([`crate::optim::DataSlice`]); the outer step averages their pseudo-gradients and applies
//! Nesterov momentum to the global parameters. It costs one pass over the parameters, so every
//! evaluator recomputes it exactly instead of sampling it.
//!
//! Per parameter element, in this order, each operation rounded once:
//!
//! ```text
//! s = +0;  for k in 0..K (the slots' order):  s = s + (θ − θ_k)
//! Δ = s / K
//! v = μ·v + Δ                   (v, the outer momentum, starts at +0)
//! θ' = θ − lr·(Δ + μ·v)
//! ```
//!
//! The inner optimizer's state carried into the next round is the element-wise mean of the K
//! inner states (summed in slot order, divided by K), and the step is the inner runs' (all equal).
//! A slot whose trainer failed is left out: the mean is over the K' results the round has.

use crate::checkpoint::TrainState;
use crate::error::GpuError;
use crate::executor::Tensor;
use serde::{Deserialize, Serialize};

/// The outer optimizer: SGD with Nesterov momentum on the averaged pseudo-gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OuterParams {
    pub lr: f32,
    pub momentum: f32,
}

impl OuterParams {
    /// DiLoCo's published setting.
    pub const DILOCO: OuterParams = OuterParams {
        lr: 0.7,
        momentum: 0.9,
    };

    pub fn validate(&self) -> Result<(), GpuError> {
        if !(self.lr > 0.0 && self.lr <= 2.0 && (0.0..1.0).contains(&self.momentum)) {
            return Err(GpuError::HyperParamsInvalid {
                reason: format!(
                    "outer lr {} must be in (0, 2], momentum {} in [0, 1)",
                    self.lr, self.momentum
                ),
            });
        }
        Ok(())
    }
}

fn mismatch(reason: String) -> GpuError {
    GpuError::ShapeMismatch { reason }
}

/// The mean of `parts` element by element: summed in order from +0, divided by their count.
fn mean_of(parts: &[&Tensor]) -> Tensor {
    let k = parts.len() as f32;
    let mut out = Tensor::zeros(&parts[0].shape);
    for p in parts {
        for (o, &v) in out.data.iter_mut().zip(&p.data) {
            *o += v;
        }
    }
    out.data.iter_mut().for_each(|o| *o /= k);
    out
}

/// The new global state from the round's `global` start and the inner results of the slots that
/// finished, in slot order.
pub fn outer_step(
    global: &TrainState,
    inners: &[TrainState],
    outer: &OuterParams,
) -> Result<TrainState, GpuError> {
    outer.validate()?;
    let first = inners
        .first()
        .ok_or_else(|| mismatch("a round needs at least one inner result".into()))?;
    for (k, s) in inners.iter().enumerate() {
        if s.step != first.step || s.step <= global.step {
            return Err(mismatch(format!(
                "inner result {k} is at step {}, the round runs from {} to {}",
                s.step, global.step, first.step
            )));
        }
        let same = |a: &[Tensor], b: &[Tensor]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.shape == y.shape)
        };
        if !same(&s.params, &global.params) || !same(&s.opt_state, &first.opt_state) {
            return Err(mismatch(format!(
                "inner result {k} does not have the global checkpoint's shapes"
            )));
        }
    }
    if !global.outer.is_empty() && global.outer.len() != global.params.len() {
        return Err(mismatch(
            "the outer momentum does not fit the parameters".into(),
        ));
    }
    let k = inners.len() as f32;
    let (lr, mu) = (outer.lr, outer.momentum);
    let mut params = Vec::with_capacity(global.params.len());
    let mut momentum = Vec::with_capacity(global.params.len());
    for (t, g) in global.params.iter().enumerate() {
        let mut p = g.clone();
        let mut v = match global.outer.get(t) {
            Some(v) => v.clone(),
            None => Tensor::zeros(&g.shape),
        };
        for (i, (pv, vv)) in p.data.iter_mut().zip(v.data.iter_mut()).enumerate() {
            let theta = *pv;
            let mut s = 0.0f32;
            for inner in inners {
                s += theta - inner.params[t].data[i];
            }
            let delta = s / k;
            *vv = mu * *vv + delta;
            *pv = theta - lr * (delta + mu * *vv);
        }
        params.push(p);
        momentum.push(v);
    }
    let opt_state = (0..first.opt_state.len())
        .map(|t| mean_of(&inners.iter().map(|s| &s.opt_state[t]).collect::<Vec<_>>()))
        .collect();
    Ok(TrainState {
        step: first.step,
        params,
        opt_state,
        outer: momentum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64, vals: &[f32]) -> TrainState {
        let t = Tensor {
            shape: vec![vals.len()],
            data: vals.to_vec(),
        };
        TrainState {
            step,
            params: vec![t.clone()],
            opt_state: vec![t],
            outer: vec![],
        }
    }

    #[test]
    fn averages_pseudo_gradients_with_nesterov_momentum() {
        let global = state(10, &[1.0, -2.0, 0.5]);
        let inners = [state(20, &[0.0, -2.0, 1.0]), state(20, &[0.5, -1.0, 1.5])];
        let o = OuterParams {
            lr: 0.5,
            momentum: 0.9,
        };
        let next = outer_step(&global, &inners, &o).unwrap();
        // Δ = mean(θ − θ_k) = [0.75, −0.5, −0.75]; v = Δ; θ' = θ − 0.5·(Δ + 0.9·Δ).
        for (i, (&theta, &d)) in [1.0f64, -2.0, 0.5]
            .iter()
            .zip(&[0.75f64, -0.5, -0.75])
            .enumerate()
        {
            let want = theta - 0.5 * (d + 0.9 * d);
            assert!((f64::from(next.params[0].data[i]) - want).abs() < 1e-6);
            assert!((f64::from(next.outer[0].data[i]) - d).abs() < 1e-6);
        }
        assert_eq!(next.step, 20);
        // The inner state carried on is the mean.
        assert_eq!(next.opt_state[0].data, vec![0.25, -1.5, 1.25]);
        // A second round uses the momentum: v = 0.9·v + Δ.
        let again = outer_step(&next, &[state(30, &[0.0, 0.0, 0.0])], &o).unwrap();
        let d0 = f64::from(next.params[0].data[0]);
        let v0 = 0.9 * 0.75 + d0;
        assert!((f64::from(again.outer[0].data[0]) - v0).abs() < 1e-6);
        // Recomputing gives the same bits; the momentum round-trips through a checkpoint.
        let model =
            crate::spec::ModelSpec::from_json(br#"{"kind":"logistic","input":2,"classes":2}"#)
                .unwrap();
        let g = crate::train::initial_state(
            &model,
            &crate::optim::HyperParams {
                optimizer: crate::optim::Optimizer::Sgd {
                    lr: 0.1,
                    momentum: 0.5,
                },
                batch: 1,
                seed: 1,
            },
        );
        let mut i1 = g.clone();
        i1.step = 5;
        i1.params[0].data[0] += 0.25;
        let a = outer_step(&g, &[i1.clone()], &OuterParams::DILOCO).unwrap();
        let b = outer_step(&g, &[i1], &OuterParams::DILOCO).unwrap();
        assert_eq!(a.encode(&model), b.encode(&model));
        let bytes = a.encode(&model);
        assert_eq!(TrainState::decode(&bytes, &model).unwrap(), a);
    }

    #[test]
    fn mismatched_rounds_are_refused() {
        let global = state(10, &[1.0, 2.0]);
        let o = OuterParams::DILOCO;
        assert!(outer_step(&global, &[], &o).is_err());
        assert!(outer_step(&global, &[state(10, &[1.0, 2.0])], &o).is_err());
        assert!(outer_step(
            &global,
            &[state(20, &[1.0, 2.0]), state(21, &[1.0, 2.0])],
            &o
        )
        .is_err());
        assert!(outer_step(&global, &[state(20, &[1.0])], &o).is_err());
        assert!(outer_step(
            &global,
            &[state(20, &[1.0, 2.0])],
            &OuterParams {
                lr: 0.0,
                momentum: 0.9
            }
        )
        .is_err());
    }
}
