//! The declarative model spec a researcher submits (JSON), and its validation into a list of
//! layers with known shapes.
//!
//! ```json
//! {"kind": "mlp", "input": 64, "classes": 10,
//!  "hidden": [{"units": 64, "activation": "relu"}]}
//! {"kind": "logistic", "input": 64, "classes": 10}
//! {"kind": "cnn", "input": {"channels": 1, "height": 8, "width": 8}, "classes": 10,
//!  "conv": [{"filters": 8, "kernel": 3, "activation": "relu"}], "hidden": []}
//! {"kind": "transformer", "layers": 4, "d_model": 128, "heads": 4, "context": 128,
//!  "vocab": 256, "tied": true}
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
/// The most trainable parameters of a transformer (a GPT-2-medium-sized model fits; a 124 M
/// GPT-2 small with its 50,257-token vocabulary is well inside).
pub const TRANSFORMER_PARAMS_MAX: u64 = 400_000_000;
/// Transformer bounds: blocks, model width, heads, context length (tokens), vocabulary.
pub const TRANSFORMER_LAYERS_MAX: u64 = 48;
pub const D_MODEL_MAX: u64 = 2048;
pub const HEADS_MAX: u64 = 32;
pub const CONTEXT_MAX: u64 = 2048;
pub const VOCAB_MAX: u64 = 1 << 17;

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
    /// A decoder-only transformer language model (see [`crate::transformer`]): token embedding,
    /// learned positions, `layers` pre-LayerNorm blocks of causal multi-head attention and a GELU
    /// MLP (4 × `d_model` wide), a final LayerNorm and an output head over the vocabulary, tied
    /// to the token embedding unless `tied` is false.
    Transformer {
        layers: u64,
        d_model: u64,
        heads: u64,
        context: u64,
        vocab: u64,
        #[serde(default = "tied_default")]
        tied: bool,
    },
}

fn tied_default() -> bool {
    true
}

/// A transformer's resolved shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerDims {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    /// `d_model / heads`.
    pub head_dim: usize,
    /// The MLP's hidden width, `4 × d_model`.
    pub d_ff: usize,
    pub context: usize,
    pub vocab: usize,
    pub tied: bool,
}

impl TransformerDims {
    /// Parameter tensors per block (two LayerNorms, attention in/out, MLP in/out, with biases).
    pub const TENSORS_PER_BLOCK: usize = 12;

    /// The shape of every parameter tensor, in checkpoint order: `wte [vocab, d]`, `wpe
    /// [context, d]`; per block `ln1.g, ln1.b [d]`, `w_qkv [d, 3d]`, `b_qkv [3d]`, `w_o [d, d]`,
    /// `b_o [d]`, `ln2.g, ln2.b [d]`, `w_fc [d, 4d]`, `b_fc [4d]`, `w_proj [4d, d]`, `b_proj
    /// [d]`; then `lnf.g, lnf.b [d]`, and `head [d, vocab]` when untied.
    pub fn param_shapes(&self) -> Vec<Vec<usize>> {
        let (d, f) = (self.d_model, self.d_ff);
        let mut out = vec![vec![self.vocab, d], vec![self.context, d]];
        for _ in 0..self.layers {
            out.extend([
                vec![d],
                vec![d],
                vec![d, 3 * d],
                vec![3 * d],
                vec![d, d],
                vec![d],
                vec![d],
                vec![d],
                vec![d, f],
                vec![f],
                vec![f, d],
                vec![d],
            ]);
        }
        out.extend([vec![d], vec![d]]);
        if !self.tied {
            out.push(vec![d, self.vocab]);
        }
        out
    }

    /// The number of trainable parameters.
    pub fn param_count(&self) -> u64 {
        self.param_shapes()
            .iter()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum()
    }
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

/// A validated spec: the layers in order, the input width and the number of classes. A
/// transformer has no `layers`; its shape is `transformer`, `input` is its context length and
/// `classes` its vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub spec: ModelSpec,
    pub layers: Vec<Layer>,
    pub input: usize,
    pub classes: usize,
    pub transformer: Option<TransformerDims>,
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
        if let ModelSpec::Transformer {
            layers,
            d_model,
            heads,
            context,
            vocab,
            tied,
        } = self
        {
            for (what, v) in [
                ("layers", layers),
                ("d_model", d_model),
                ("heads", heads),
                ("context", context),
            ] {
                at_least_one(what, v)?;
            }
            too_large("transformer layers", layers, TRANSFORMER_LAYERS_MAX)?;
            too_large("d_model", d_model, D_MODEL_MAX)?;
            too_large("heads", heads, HEADS_MAX)?;
            too_large("context", context, CONTEXT_MAX)?;
            too_large("vocab", vocab, VOCAB_MAX)?;
            if vocab < 2 {
                return Err(GpuError::SpecMalformed {
                    reason: format!("vocab = {vocab}, must be at least 2"),
                });
            }
            if d_model % heads != 0 {
                return Err(GpuError::SpecMalformed {
                    reason: format!("d_model = {d_model} is not a multiple of heads = {heads}"),
                });
            }
            let dims = TransformerDims {
                layers: layers as usize,
                d_model: d_model as usize,
                heads: heads as usize,
                head_dim: (d_model / heads) as usize,
                d_ff: 4 * d_model as usize,
                context: context as usize,
                vocab: vocab as usize,
                tied,
            };
            too_large("parameters", dims.param_count(), TRANSFORMER_PARAMS_MAX)?;
            return Ok(Model {
                spec: self,
                layers: Vec::new(),
                input: dims.context,
                classes: dims.vocab,
                transformer: Some(dims),
            });
        }
        let (input, classes, conv, hidden, image): (u64, u64, &[ConvSpec], &[DenseSpec], _) =
            match &self {
                ModelSpec::Logistic { input, classes } => (*input, *classes, &[], &[], None),
                ModelSpec::Mlp {
                    input,
                    hidden,
                    classes,
                } => (*input, *classes, &[], hidden.as_slice(), None),
                ModelSpec::Transformer { .. } => unreachable!("handled above"),
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
            transformer: None,
        })
    }
}

impl Model {
    /// The number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// The shape of every parameter tensor, in checkpoint order (each layer's weight then bias,
    /// or a transformer's order, [`TransformerDims::param_shapes`]).
    pub fn param_shapes(&self) -> Vec<Vec<usize>> {
        match &self.transformer {
            Some(t) => t.param_shapes(),
            None => self
                .layers
                .iter()
                .flat_map(|l| {
                    let (w, b) = l.param_shapes();
                    [w, b]
                })
                .collect(),
        }
    }

    /// Whether this is a language model (token ids in, next-token distributions out).
    pub fn is_transformer(&self) -> bool {
        self.transformer.is_some()
    }

    /// The largest checkpoint of this model: parameters and two optimizer slots, plus room for
    /// the header.
    pub fn checkpoint_bytes_max(&self) -> usize {
        self.param_count() * 4 * 3 + (1 << 20)
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
            br#"{"kind":"transformer","layers":2,"d_model":30,"heads":4,"context":16,"vocab":256}"#,
            br#"{"kind":"transformer","layers":0,"d_model":32,"heads":4,"context":16,"vocab":256}"#,
            br#"{"kind":"transformer","layers":2,"d_model":32,"heads":4,"context":16,"vocab":1}"#,
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
    fn transformers_parse_with_their_parameter_count() {
        let small = ModelSpec::from_json(
            br#"{"kind":"transformer","layers":2,"d_model":32,"heads":4,"context":16,"vocab":256}"#,
        )
        .unwrap();
        let t = small.transformer.unwrap();
        assert!(t.tied && t.head_dim == 8 && t.d_ff == 128);
        let per_block =
            4 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32);
        assert_eq!(
            small.param_count(),
            256 * 32 + 16 * 32 + 2 * per_block + 2 * 32
        );
        // The spec's canonical JSON names `tied` even when the submitter left it out.
        assert!(small.spec.to_json().contains(r#""tied":true"#));
        // GPT-2 small (124 M parameters) is inside the bounds, untied too.
        let gpt2 = ModelSpec::from_json(
            br#"{"kind":"transformer","layers":12,"d_model":768,"heads":12,"context":1024,"vocab":50257,"tied":false}"#,
        )
        .unwrap();
        assert!(gpt2.param_count() > 100_000_000, "{}", gpt2.param_count());
        let huge = br#"{"kind":"transformer","layers":48,"d_model":2048,"heads":16,"context":2048,"vocab":50257}"#;
        assert!(matches!(
            ModelSpec::from_json(huge),
            Err(GpuError::SpecTooLarge {
                what: "parameters",
                ..
            })
        ));
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
