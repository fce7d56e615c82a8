"""The network's models in numpy: the forward pass of the engine's deterministic CPU executor
(crates/gpu/src/executor.rs), so certified weights can be used and checked anywhere.

A spec (crates/gpu/src/spec.rs) resolves to layers in order: for a ``cnn`` its convolutions, then
(``mlp`` and ``cnn``) its hidden dense layers, then a dense output layer without activation that
gives the logits. Dense: ``y = act(x · W + b)`` with ``W`` of shape ``inputs × outputs``.
Convolutions are valid (no padding), stride 1, ``W`` of shape ``filters × channels × k × k``; a
sample is ``channels × height × width`` flattened row-major, and so is a convolution's output
(``filters × (h−k+1) × (w−k+1)``) when the next layer reads it. Parameters come in the order
weight, bias of each layer: the checkpoint's ``param.000``, ``param.001``, ...

By default (``exact=True``) the arithmetic is the executor's: float32 throughout, every sum
accumulated from the bias in the executor's order (dense layers with one fused multiply-add per
term, convolutions with a rounded product and a rounded addition per term), and tanh/sigmoid
through the engine's deterministic exp. The logits are then the same bits the
network's evaluators compute, so an accuracy measured here equals the certified one.
``exact=False`` uses numpy's matrix products and functions instead (faster, last-bit different).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Params = Union[Sequence[npt.ArrayLike], Mapping[str, npt.ArrayLike]]

# Bounds of crates/gpu/src/spec.rs.
PARAMS_MAX = 4_000_000
LAYERS_MAX = 8
UNITS_MAX = 4096
INPUT_MAX = 1 << 16
FILTERS_MAX = 64
KERNEL_MAX = 7
CLASSES_MAX = 256
ACTIVATIONS = ("relu", "tanh", "sigmoid")

_LN2 = math.log(2.0)


class SpecError(ValueError):
    """A model spec the engine would refuse."""


@dataclass(frozen=True)
class Dense:
    inputs: int
    outputs: int
    activation: Optional[str]

    @property
    def param_shapes(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        return (self.inputs, self.outputs), (self.outputs,)


@dataclass(frozen=True)
class Conv:
    channels: int
    height: int
    width: int
    filters: int
    kernel: int
    activation: str

    @property
    def out_height(self) -> int:
        return self.height - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.width - self.kernel + 1

    @property
    def inputs(self) -> int:
        return self.channels * self.height * self.width

    @property
    def outputs(self) -> int:
        return self.filters * self.out_height * self.out_width

    @property
    def param_shapes(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        return (self.filters, self.channels, self.kernel, self.kernel), (self.filters,)


Layer = Union[Dense, Conv]


def _fields(obj: Any, what: str, required: Sequence[str], optional: Sequence[str] = ()) -> None:
    if not isinstance(obj, dict):
        raise SpecError(f"{what} must be an object")
    unknown = set(obj) - set(required) - set(optional)
    if unknown:
        raise SpecError(f"{what}: unknown field(s) {sorted(unknown)}")
    missing = [f for f in required if f not in obj]
    if missing:
        raise SpecError(f"{what}: missing field(s) {missing}")


def _uint(
    obj: Mapping[str, Any], key: str, what: str, lo: int = 1, hi: Optional[int] = None
) -> int:
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise SpecError(f"{what}.{key} must be a non-negative integer, found {v!r}")
    if v < lo:
        raise SpecError(f"{what}.{key} = {v}, must be at least {lo}")
    if hi is not None and v > hi:
        raise SpecError(f"{what}.{key} = {v}, at most {hi}")
    return v


def _activation(obj: Mapping[str, Any], what: str) -> str:
    a = obj["activation"]
    if a not in ACTIVATIONS:
        raise SpecError(f"{what}.activation = {a!r}, one of {', '.join(ACTIVATIONS)}")
    return str(a)


def _layers(spec: Mapping[str, Any]) -> Tuple[List[Layer], int, int]:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise SpecError('a model spec is an object with a "kind"')
    kind = spec["kind"]
    if kind == "logistic":
        _fields(spec, "logistic", ["kind", "input", "classes"])
    elif kind == "mlp":
        _fields(spec, "mlp", ["kind", "input", "hidden", "classes"])
    elif kind == "cnn":
        _fields(spec, "cnn", ["kind", "input", "conv", "hidden", "classes"])
    else:
        raise SpecError(f"unknown model kind {kind!r}: logistic, mlp, cnn or transformer")
    classes = _uint(spec, "classes", kind, lo=2, hi=CLASSES_MAX)
    layers: List[Layer] = []
    hidden = spec.get("hidden", [])
    conv = spec.get("conv", [])
    if not isinstance(hidden, list) or not isinstance(conv, list):
        raise SpecError("hidden and conv are lists")
    if kind == "cnn":
        image = spec["input"]
        _fields(image, "cnn.input", ["channels", "height", "width"])
        c, h, w = (_uint(image, k, "input") for k in ("channels", "height", "width"))
        input_width = c * h * w
        if not conv:
            raise SpecError("a cnn needs at least one conv layer")
    else:
        input_width = _uint(spec, "input", kind)
    if input_width > INPUT_MAX:
        raise SpecError(f"input = {input_width}, at most {INPUT_MAX}")
    if len(conv) + len(hidden) + 1 > LAYERS_MAX:
        raise SpecError(f"{len(conv) + len(hidden) + 1} layers, at most {LAYERS_MAX}")
    width = input_width
    if kind == "cnn":
        for cs in conv:
            _fields(cs, "conv", ["filters", "kernel", "activation"])
            f = _uint(cs, "filters", "conv", hi=FILTERS_MAX)
            k = _uint(cs, "kernel", "conv", hi=KERNEL_MAX)
            if k > h or k > w:
                raise SpecError(f"kernel {k} larger than the {h}×{w} image it convolves")
            layer = Conv(c, h, w, f, k, _activation(cs, "conv"))
            layers.append(layer)
            c, h, w = f, h - k + 1, w - k + 1
            width = layer.outputs
    for d in hidden:
        _fields(d, "hidden", ["units", "activation"])
        units = _uint(d, "units", "hidden", hi=UNITS_MAX)
        layers.append(Dense(width, units, _activation(d, "hidden")))
        width = units
    layers.append(Dense(width, classes, None))
    count = sum(int(np.prod(w)) + int(np.prod(b)) for w, b in (x.param_shapes for x in layers))
    if count > PARAMS_MAX:
        raise SpecError(f"{count} parameters, at most {PARAMS_MAX}")
    return layers, input_width, classes


# --- the engine's deterministic functions (crates/gpu/src/detmath.rs) ---------------------------


def _round_half_away(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)


def _f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


# detmath.rs's constants, as their float32 bits.
_LN2_HI = _f32(0x3F317200)
_LN2_LO = _f32(0x35BFBE8E)
_LOG2_E = _f32(0x3FB8AA3B)
_EXP_MIN = _f32(0xC2AE999A)
_EXP_MAX = _f32(0x42B16666)
_EXP_POLY = [_f32(b) for b in (0x39500D01, 0x3AB60B61, 0x3C088889, 0x3D2AAAAB, 0x3E2AAAAB)] + [
    np.float32(0.5),
    np.float32(1.0),
    np.float32(1.0),
]
_TANH_POLY = [
    _f32(b) for b in (0xBABED1B2, 0x3B6B69E8, 0xBC11371B, 0x3CB327A4, 0xBD5D0DD1, 0x3E088889, 0xBEAAAAAB)
]
_TINY = np.float32(np.finfo(np.float32).tiny)


def _flush(v: F32) -> F32:
    return np.where(np.abs(v) < _TINY, np.float32(0.0), v).astype(np.float32)


def _horner(coefs: "list[np.float32]", x: F32) -> F32:
    p = np.full_like(x, coefs[0])
    for c in coefs[1:]:
        p = fma(p, x, np.full_like(x, c))
    return p


def det_exp(x: F32) -> F32:
    """e^x as the engine computes it: detmath.rs's fixed sequence of float32 operations."""
    x = np.asarray(x, dtype=np.float32)
    xc = np.clip(x, _EXP_MIN, _EXP_MAX)
    with np.errstate(invalid="ignore"):
        n = np.floor(xc * _LOG2_E + np.float32(0.5)).astype(np.float32)
        r = fma(-n, np.full_like(n, _LN2_HI), xc)
        r = fma(-n, np.full_like(n, _LN2_LO), r)
        p = _horner(_EXP_POLY, r)
        ni = np.nan_to_num(n).astype(np.int32)
    n1 = np.minimum(ni, 127)
    one = np.float32(1.0)
    out = _flush(p * np.ldexp(one, n1).astype(np.float32) * np.ldexp(one, ni - n1).astype(np.float32))
    return np.where(np.isnan(x), np.float32(np.nan), out).astype(np.float32)


def det_tanh(x: F32) -> F32:
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    z = a * a
    small = fma(a * z, _horner(_TANH_POLY, z), a)
    e = det_exp(np.float32(-2.0) * a)
    mid = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    t = np.where(a < np.float32(0.5), small, np.where(a < np.float32(9.0), mid, np.float32(1.0)))
    return np.copysign(t, x).astype(np.float32)


def det_sigmoid(x: F32) -> F32:
    x = np.asarray(x, dtype=np.float32)
    return _flush(np.float32(1.0) / (np.float32(1.0) + det_exp(-x)))


def _activate(a: Optional[str], v: F32, exact: bool) -> F32:
    if a is None:
        return v
    if a == "relu":
        return np.where(v > np.float32(0.0), v, np.float32(0.0)).astype(np.float32)
    if a == "tanh":
        return det_tanh(v) if exact else np.tanh(v).astype(np.float32)
    if a == "sigmoid":
        if exact:
            return det_sigmoid(v)
        return (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)
    raise SpecError(f"unknown activation {a!r}")


def fma(a: F32, b: F32, c: F32) -> F32:
    """``a·b + c`` in float32 with one rounding (IEEE 754 fusedMultiplyAdd), elementwise, exactly
    as the engine's software fma: the product is exact in float64, TwoSum gives the sum's
    rounding error, and rounding the sum to odd before the final rounding to float32 makes that
    rounding correct."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = np.asarray(c, dtype=np.float64)
    s = p + c64
    c1 = s - p
    p1 = s - c1
    e = (p - p1) + (c64 - c1)
    bits = s.view(np.uint64)
    toward = np.where((e > 0.0) == (s > 0.0), bits + np.uint64(1), bits - np.uint64(1))
    odd = (e != 0.0) & ((bits & np.uint64(1)) == 0) & np.isfinite(s)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(odd, toward, bits).view(np.float64).astype(np.float32)


def _dense(x: F32, w: F32, b: F32, exact: bool) -> F32:
    if not exact:
        return (x @ w + b).astype(np.float32)
    # y[i][·] = fma(x[i][k], W[k][·], …) from the bias, k ascending: the engine's GEMM.
    out = np.broadcast_to(b, (x.shape[0], w.shape[1])).astype(np.float32)
    for k in range(w.shape[0]):
        out = fma(
            np.broadcast_to(x[:, k : k + 1], out.shape), np.broadcast_to(w[k], out.shape), out
        )
    return out


def _conv(x: F32, w: F32, b: F32, layer: Conv, exact: bool) -> F32:
    n = x.shape[0]
    img = x.reshape(n, layer.channels, layer.height, layer.width)
    oh, ow, k = layer.out_height, layer.out_width, layer.kernel
    if not exact:
        acc = np.zeros((n, layer.filters, oh, ow), dtype=np.float32)
        for ky in range(k):
            for kx in range(k):
                patch = img[:, :, ky : ky + oh, kx : kx + ow]
                acc += np.einsum("nchw,fc->nfhw", patch, w[:, :, ky, kx])
        return (acc + b[None, :, None, None]).reshape(n, -1).astype(np.float32)
    # Each output starts at its filter's bias and adds w·x over (channel, ky, kx) in order.
    out = np.broadcast_to(b[None, :, None, None], (n, layer.filters, oh, ow)).copy()
    for c in range(layer.channels):
        for ky in range(k):
            for kx in range(k):
                patch = img[:, None, c, ky : ky + oh, kx : kx + ow]
                out += w[None, :, c, ky, kx, None, None] * patch
    return out.reshape(n, -1)


def ordered_params(weights: Params, shapes: Sequence[Tuple[int, ...]]) -> List[F32]:
    """The parameter tensors in checkpoint order as float32 arrays, checked against ``shapes``:
    from a list, or from :func:`trainmesh.load_weights`'s dict (its ``param.NNN`` entries)."""
    if isinstance(weights, Mapping):
        names = sorted(k for k in weights if k.startswith("param."))
        arrays = [weights[k] for k in names]
    else:
        names = [f"param.{i:03}" for i in range(len(weights))]
        arrays = list(weights)
    if len(arrays) != len(shapes):
        raise ValueError(f"{len(arrays)} parameter tensors for a model of {len(shapes)}")
    out = []
    for name, a, shape in zip(names, arrays, shapes):
        if hasattr(a, "detach"):  # a torch tensor
            t = np.asarray(a.detach().cpu().numpy())
        else:
            t = np.asarray(a)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, the model needs {shape}")
        out.append(np.ascontiguousarray(t, dtype=np.float32))
    return out


class Model:
    """A model spec (a dict or its JSON text), resolved to layers with shapes.

    >>> m = Model({"kind": "mlp", "input": 64, "classes": 10,
    ...            "hidden": [{"units": 64, "activation": "relu"}]})
    >>> m.param_shapes()
    [(64, 64), (64,), (64, 10), (10,)]
    """

    def __new__(cls, spec: Union[str, Mapping[str, Any]]) -> Any:
        # A transformer spec gives the language model (trainmesh.transformer.Transformer).
        parsed = json.loads(spec) if isinstance(spec, str) else spec
        if cls is Model and isinstance(parsed, Mapping) and parsed.get("kind") == "transformer":
            from .transformer import Transformer

            return Transformer(parsed)
        return super().__new__(cls)

    def __init__(self, spec: Union[str, Mapping[str, Any]]) -> None:
        parsed = json.loads(spec) if isinstance(spec, str) else dict(spec)
        self.spec: Dict[str, Any] = parsed
        self.layers, self.input, self.classes = _layers(parsed)

    def to_json(self) -> str:
        """The spec as compact JSON (what a job carries)."""
        return json.dumps(self.spec, separators=(",", ":"))

    def param_shapes(self) -> List[Tuple[int, ...]]:
        """Weight and bias shapes, layer by layer: the order of ``param.NNN``."""
        return [s for layer in self.layers for s in layer.param_shapes]

    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes())

    def params(self, weights: Params) -> List[F32]:
        """The parameters in order as float32 arrays, checked against the model's shapes, from a
        list or from :func:`trainmesh.load_weights`'s dict (its ``param.NNN`` entries)."""
        return ordered_params(weights, self.param_shapes())

    def logits(self, params: Params, x: npt.ArrayLike, *, exact: bool = True) -> F32:
        """The logits (``samples × classes``, float32) for the rows of ``x``."""
        ps = self.params(params)
        h = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
        if h.ndim == 1:
            h = h.reshape(1, -1)
        if h.ndim != 2 or h.shape[1] != self.input:
            raise ValueError(f"x has shape {h.shape}, the model takes rows of {self.input}")
        for i, layer in enumerate(self.layers):
            w, b = ps[2 * i], ps[2 * i + 1]
            if isinstance(layer, Conv):
                h = _conv(h, w, b, layer, exact)
            else:
                h = _dense(h, w, b, exact)
            h = _activate(layer.activation, h, exact)
        return h

    def predict(
        self, params: Params, x: npt.ArrayLike, *, exact: bool = True
    ) -> npt.NDArray[np.int64]:
        """The predicted class of each row: the largest logit, the first one on ties."""
        labels: npt.NDArray[np.int64] = np.argmax(self.logits(params, x, exact=exact), axis=1)
        return labels

    def correct(
        self, params: Params, x: npt.ArrayLike, y: npt.ArrayLike, *, exact: bool = True
    ) -> int:
        """How many rows are predicted as their label."""
        labels = np.asarray(y).astype(np.int64).reshape(-1)
        return int(np.sum(self.predict(params, x, exact=exact) == labels))

    def accuracy(
        self, params: Params, x: npt.ArrayLike, y: npt.ArrayLike, *, exact: bool = True
    ) -> float:
        """The fraction of rows predicted correctly."""
        n = int(np.asarray(y).reshape(-1).shape[0])
        if n == 0:
            raise ValueError("no samples")
        return self.correct(params, x, y, exact=exact) / n

    def accuracy_ppm(self, params: Params, x: npt.ArrayLike, y: npt.ArrayLike) -> int:
        """The accuracy in parts per million, rounded as evaluators report it
        (comparable with a job's ``latest_metric_ppm``)."""
        n = int(np.asarray(y).reshape(-1).shape[0])
        return ppm_of(self.correct(params, x, y), n)


def ppm_of(correct: int, total: int) -> int:
    """``correct / total`` in parts per million, rounded half away from zero, as the nodes do
    (``(accuracy × 10⁶).round()``, computed in float64)."""
    return int(_round_half_away(np.array([correct / total * 1e6]))[0])
