//! The declarative model spec a researcher submits (JSON), and its validation into a list of
//! layers with known shapes.
//!
//! ```json
//! {"kind": "mlp", "input": 64, "classes": 10,
//!  "hidden": [{"units": 64, "activation": "relu"}]}
//! {"kind": "logistic", "input": 64, "classes": 10}
//! {"kind": "cnn", "input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
//!  "conv": [{"filters": 8, "kernel": 3, "activation": "relu"}], "hidden": []}
//! ```
//!
//! Unknown fields are errors, and every size is bounded so that a spec cannot ask a trainer for
//! more memory or compute than the network agreed to (`*_MAX` below).

use crate::error::GpuError;
use crate::hash::Hash32;
use serde::{Deserialize, Serialize};

/// The largest spec document accepted, in bytes.
pub const SPEC_BYTES_MAX: usize = 64 << 10;
/// The most trainable parameters a model may have.
pub const PARAMS_MAX: u64 = 4_000_000;
/// The most layers (dense and convolutional together).
pub const LAYERS_MAX: u64 = 8;
/// The widest dense layer.
pub const UNITS_MAX: u64 = 4096;
/// The most input features.
pub const INPUT_MAX: u64 = 1 << 16;
/// The most convolution filters in one layer, and the largest kernel side.
pub const FILTERS_MAX: u64 = 64;
pub const KERNEL_MAX: u64 = 7;
/// The most classes.
pub const CLASSES_MAX: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    pub units: u64,
    pub activation: Activation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    pub filters: u64,
    pub kernel: u64,
    pub activation: Activation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageShape {
    pub channels: u64,
    pub height: u64,
    pub width: u64,
}

/// A model as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    Logistic {
        input: u64,
        classes: u64,
    },
    Mlp {
        input: u64,
        hidden: Vec<DenseSpec>,
        classes: u64,
    },
    Cnn {
        input: ImageShape,
        conv: Vec<ConvSpec>,
        hidden: Vec<DenseSpec>,
        classes: u64,
    },
}

/// One layer with its shapes resolved. Valid convolutions (no padding), stride 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `y = act(x · W + b)`, W is `inputs × outputs` row-major.
    Dense {
        inputs: usize,
        outputs: usize,
        activation: Option<Activation>,
    },
    /// W is `filters × channels × kernel × kernel`; output `filters × (h−k+1) × (w−k+1)`.
    Conv {
        channels: usize,
        height: usize,
        width: usize,
        filters: usize,
        kernel: usize,
        activation: Activation,
    },
}

impl Layer {
    pub fn inputs(&self) -> usize {
        match *self {
            Layer::Dense { inputs, .. } => inputs,
            Layer::Conv {
                channels,
                height,
                width,
                ..
            } => channels * height * width,
        }
    }

    pub fn outputs(&self) -> usize {
        match *self {
            Layer::Dense { outputs, .. } => outputs,
            Layer::Conv {
                height,
                width,
                filters,
                kernel,
                ..
            } => filters * (height - kernel + 1) * (width - kernel + 1),
        }
    }

    /// Shapes of (weight, bias).
    pub fn param_shapes(&self) -> (Vec<usize>, Vec<usize>) {
        match *self {
            Layer::Dense {
                inputs, outputs, ..
            } => (vec![inputs, outputs], vec![outputs]),
            Layer::Conv {
                channels,
                filters,
                kernel,
                ..
            } => (vec![filters, channels, kernel, kernel], vec![filters]),
        }
    }

    /// (fan in, fan out) for initialization.
    pub fn fans(&self) -> (usize, usize) {
        match *self {
            Layer::Dense {
                inputs, outputs, ..
            } => (inputs, outputs),
            Layer::Conv {
                channels,
                filters,
                kernel,
                ..
            } => (channels * kernel * kernel, filters * kernel * kernel),
        }
    }
}

/// A validated spec: the layers in order, the input width and the number of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub spec: ModelSpec,
    pub layers: Vec<Layer>,
    pub input: usize,
    pub classes: usize,
}

fn too_large(what: &'static str, actual: u64, max: u64) -> Result<(), GpuError> {
    if actual > max {
        Err(GpuError::SpecTooLarge { what, actual, max })
    } else {
        Ok(())
    }
}

fn at_least_one(what: &str, v: u64) -> Result<(), GpuError> {
    if v == 0 {
        Err(GpuError::SpecMalformed {
            reason: format!("{what} must be at least 1"),
        })
    } else {
        Ok(())
    }
}

impl ModelSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(json: &[u8]) -> Result<Model, GpuError> {
        if json.len() > SPEC_BYTES_MAX {
            return Err(GpuError::SpecTooLarge {
                what: "spec bytes",
                actual: json.len() as u64,
                max: SPEC_BYTES_MAX as u64,
            });
        }
        let spec: ModelSpec =
            serde_json::from_slice(json).map_err(|e| GpuError::SpecMalformed {
                reason: e.to_string(),
            })?;
        spec.validate()
    }

    /// The canonical JSON of this spec (serde's field order, no whitespace).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// BLAKE3 of the canonical JSON: the model's identity inside checkpoints.
    pub fn hash(&self) -> Hash32 {
        Hash32::of(self.to_json().as_bytes())
    }

    /// Checks every bound and resolves the layer shapes.
    pub fn validate(self) -> Result<Model, GpuError> {
        let (input, classes, conv, hidden, image): (u64, u64, &[ConvSpec], &[DenseSpec], _) =
            match &self {
                ModelSpec::Logistic { input, classes } => (*input, *classes, &[], &[], None),
                ModelSpec::Mlp {
                    input,
                    hidden,
                    classes,
                } => (*input, *classes, &[], hidden.as_slice(), None),
                ModelSpec::Cnn {
                    input,
                    conv,
                    hidden,
                    classes,
                } => {
                    for (what, v) in [
                        ("input.channels", input.channels),
                        ("input.height", input.height),
                        ("input.width", input.width),
                    ] {
                        at_least_one(what, v)?;
                    }
                    let flat = input
                        .channels
                        .saturating_mul(input.height)
                        .saturating_mul(input.width);
                    if conv.is_empty() {
                        return Err(GpuError::SpecMalformed {
                            reason: "a cnn needs at least one conv layer".into(),
                        });
                    }
                    (
                        flat,
                        *classes,
                        conv.as_slice(),
                        hidden.as_slice(),
                        Some(input),
                    )
                }
            };
        at_least_one("input", input)?;
        too_large("input", input, INPUT_MAX)?;
        if classes < 2 {
            return Err(GpuError::SpecMalformed {
                reason: format!("classes = {classes}, must be at least 2"),
            });
        }
        too_large("classes", classes, CLASSES_MAX)?;
        too_large("layers", (conv.len() + hidden.len() + 1) as u64, LAYERS_MAX)?;
        let mut layers = Vec::new();
        let mut width = input as usize;
        if let Some(img) = image {
            let (mut c, mut h, mut w) = (
                img.channels as usize,
                img.height as usize,
                img.width as usize,
            );
            for cs in conv {
                at_least_one("conv.filters", cs.filters)?;
                at_least_one("conv.kernel", cs.kernel)?;
                too_large("conv.filters", cs.filters, FILTERS_MAX)?;
                too_large("conv.kernel", cs.kernel, KERNEL_MAX)?;
                let k = cs.kernel as usize;
                if k > h || k > w {
                    return Err(GpuError::SpecMalformed {
                        reason: format!("kernel {k} larger than the {h}×{w} image it convolves"),
                    });
                }
                let layer = Layer::Conv {
                    channels: c,
                    height: h,
                    width: w,
                    filters: cs.filters as usize,
                    kernel: k,
                    activation: cs.activation,
                };
                layers.push(layer);
                (c, h, w) = (cs.filters as usize, h - k + 1, w - k + 1);
                width = layer.outputs();
            }
        }
        for d in hidden {
            at_least_one("hidden.units", d.units)?;
            too_large("hidden.units", d.units, UNITS_MAX)?;
            layers.push(Layer::Dense {
                inputs: width,
                outputs: d.units as usize,
                activation: Some(d.activation),
            });
            width = d.units as usize;
        }
        layers.push(Layer::Dense {
            inputs: width,
            outputs: classes as usize,
            activation: None,
        });
        let params: u64 = layers
            .iter()
            .map(|l| {
                let (w, b) = l.param_shapes();
                (w.iter().product::<usize>() + b.iter().product::<usize>()) as u64
            })
            .sum();
        too_large("parameters", params, PARAMS_MAX)?;
        Ok(Model {
            spec: self,
            layers,
            input: input as usize,
            classes: classes as usize,
        })
    }
}

impl Model {
    /// The number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let (w, b) = l.param_shapes();
                w.iter().product::<usize>() + b.iter().product::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_kinds_parse() {
        let m = ModelSpec::from_json(
            br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":32,"activation":"relu"}]}"#,
        )
        .unwrap();
        assert_eq!(m.param_count(), 64 * 32 + 32 + 32 * 10 + 10);
        let l = ModelSpec::from_json(br#"{"kind":"logistic","input":64,"classes":10}"#).unwrap();
        assert_eq!(l.layers.len(), 1);
        let c = ModelSpec::from_json(
            br#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,
                "conv":[{"filters":4,"kernel":3,"activation":"relu"}],"hidden":[]}"#,
        )
        .unwrap();
        assert_eq!(c.layers[0].outputs(), 4 * 6 * 6);
        assert_eq!(c.input, 64);
    }

    #[test]
    fn malformed_specs_are_clear_errors() {
        let cases: &[&[u8]] = &[
            b"not json",
            br#"{"kind":"transformer","input":64,"classes":10}"#,
            br#"{"kind":"logistic","input":64}"#,
            br#"{"kind":"logistic","input":64,"classes":10,"extra":1}"#,
            br#"{"kind":"logistic","input":0,"classes":10}"#,
            br#"{"kind":"logistic","input":64,"classes":1}"#,
            br#"{"kind":"mlp","input":64,"classes":10,"hidden":[{"units":8,"activation":"gelu"}]}"#,
            br#"{"kind":"cnn","input":{"channels":1,"height":2,"width":2},"classes":10,"conv":[{"filters":2,"kernel":3,"activation":"relu"}],"hidden":[]}"#,
            br#"{"kind":"cnn","input":{"channels":1,"height":8,"width":8},"classes":10,"conv":[],"hidden":[]}"#,
        ];
        for c in cases {
            let err = ModelSpec::from_json(c).unwrap_err();
            assert!(
                matches!(err, GpuError::SpecMalformed { .. }),
                "{}: {err}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn oversized_specs_are_rejected() {
        let wide = br#"{"kind":"mlp","input":4096,"classes":10,"hidden":[{"units":4096,"activation":"relu"}]}"#;
        assert!(matches!(
            ModelSpec::from_json(wide),
            Err(GpuError::SpecTooLarge {
                what: "parameters",
                ..
            })
        ));
        let deep = format!(
            r#"{{"kind":"mlp","input":8,"classes":2,"hidden":[{}]}}"#,
            [r#"{"units":8,"activation":"relu"}"#; 9].join(",")
        );
        assert!(matches!(
            ModelSpec::from_json(deep.as_bytes()),
            Err(GpuError::SpecTooLarge { what: "layers", .. })
        ));
        let huge = vec![b' '; SPEC_BYTES_MAX + 1];
        assert!(matches!(
            ModelSpec::from_json(&huge),
            Err(GpuError::SpecTooLarge { .. })
        ));
    }
}
