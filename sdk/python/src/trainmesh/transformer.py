"""The network's transformer language model in numpy: the forward pass of the engine's
deterministic executor (crates/gpu/src/transformer.rs), and text generation from certified weights.

The model is GPT-2's layout: token embedding ``wte [vocab, d]`` plus learned positions ``wpe
[context, d]``; per block ``x += W_o·attn(LN₁(x)) + b_o`` and ``x += W_proj·gelu(W_fc·LN₂(x) +
b_fc) + b_proj`` (MLP width 4·d, tanh-form GELU, causal multi-head attention with scores
``(q·kᵀ)/√(d/heads)``); a final LayerNorm and the output head, ``wteᵀ`` when ``tied`` (the
default), else ``head [d, vocab]``. Parameters come in the engine's order (``param.NNN``).

By default (``exact=True``) the arithmetic is the engine's, so the logits are the bits its
evaluators compute: float32 throughout, every matrix product one chain of fused multiply-adds
over k ascending from the bias (or +0), LayerNorm and softmax sums added one term at a time in
order, ``exp`` and ``tanh`` from the engine's deterministic functions. ``exact=False`` uses numpy's
products and functions (much faster, last-bit different).

>>> t = Transformer({"kind": "transformer", "layers": 1, "d_model": 8, "heads": 2,
...                  "context": 4, "vocab": 16})
>>> t.param_count()
1048
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from .model import F32, Params, SpecError, _fields, _uint, det_exp, det_tanh, fma, ordered_params

# Bounds of crates/gpu/src/spec.rs.
TRANSFORMER_PARAMS_MAX = 400_000_000
TRANSFORMER_LAYERS_MAX = 48
D_MODEL_MAX = 2048
HEADS_MAX = 32
CONTEXT_MAX = 2048
VOCAB_MAX = 1 << 17

LN_EPS = np.float32(1e-5)
GELU_C = np.float32(0.7978846)
GELU_A = np.float32(0.044715)
TENSORS_PER_BLOCK = 12


def _matmul(a: F32, b: F32, bias: Optional[F32], exact: bool) -> F32:
    """``bias + a·b`` (or ``a·b`` from +0): the engine's GEMM when exact."""
    if not exact:
        out = a.astype(np.float32) @ b.astype(np.float32)
        return (out + bias).astype(np.float32) if bias is not None else out.astype(np.float32)
    shape = (a.shape[0], b.shape[1])
    if bias is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        out = np.broadcast_to(bias, shape).astype(np.float32)
    for k in range(a.shape[1]):
        out = fma(np.broadcast_to(a[:, k : k + 1], shape), np.broadcast_to(b[k], shape), out)
    return out


def _layer_norm(x: F32, g: F32, b: F32, exact: bool) -> F32:
    d = x.shape[1]
    if not exact:
        mean = x.mean(axis=1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
        return (((x - mean) / np.sqrt(var + LN_EPS)) * g + b).astype(np.float32)
    inv_d = np.float32(1.0) / np.float32(d)
    s = np.zeros(x.shape[0], dtype=np.float32)
    for k in range(d):
        s = s + x[:, k]
    mean = s * inv_d
    q = np.zeros(x.shape[0], dtype=np.float32)
    for k in range(d):
        c = x[:, k] - mean
        q = q + c * c
    rstd = np.float32(1.0) / np.sqrt(q * inv_d + LN_EPS)
    h = (x - mean[:, None]) * rstd[:, None]
    return (h * g + b).astype(np.float32)


def _gelu(u: F32, exact: bool) -> F32:
    inner = GELU_C * (u + GELU_A * (u * u * u))
    t = det_tanh(inner) if exact else np.tanh(inner).astype(np.float32)
    return ((np.float32(0.5) * u) * (np.float32(1.0) + t)).astype(np.float32)


def _softmax_causal(s: F32, exact: bool) -> F32:
    """Row i over columns 0..=i; the masked entries are +0."""
    t = s.shape[0]
    p = np.zeros_like(s)
    for i in range(t):
        row = s[i, : i + 1]
        m = row.max()
        e = det_exp(row - m) if exact else np.exp(row - m).astype(np.float32)
        total = np.float32(0.0)
        if exact:
            for v in e:
                total = np.float32(total + v)
        else:
            total = np.float32(e.sum())
        p[i, : i + 1] = e / total
    return p


class Transformer:
    """A ``transformer`` spec (a dict or its JSON text), resolved to its shapes."""

    def __init__(self, spec: Union[str, Mapping[str, Any]]) -> None:
        parsed = json.loads(spec) if isinstance(spec, str) else dict(spec)
        _fields(
            parsed,
            "transformer",
            ["kind", "layers", "d_model", "heads", "context", "vocab"],
            ["tied"],
        )
        if parsed["kind"] != "transformer":
            raise SpecError(f"kind {parsed['kind']!r} is not a transformer")
        self.spec: Dict[str, Any] = parsed
        self.layers = _uint(parsed, "layers", "transformer", hi=TRANSFORMER_LAYERS_MAX)
        self.d_model = _uint(parsed, "d_model", "transformer", hi=D_MODEL_MAX)
        self.heads = _uint(parsed, "heads", "transformer", hi=HEADS_MAX)
        self.context = _uint(parsed, "context", "transformer", hi=CONTEXT_MAX)
        self.vocab = _uint(parsed, "vocab", "transformer", lo=2, hi=VOCAB_MAX)
        tied = parsed.get("tied", True)
        if not isinstance(tied, bool):
            raise SpecError(f"transformer.tied must be true or false, found {tied!r}")
        self.tied = tied
        if self.d_model % self.heads:
            raise SpecError(f"d_model = {self.d_model} is not a multiple of heads = {self.heads}")
        self.head_dim = self.d_model // self.heads
        if self.param_count() > TRANSFORMER_PARAMS_MAX:
            raise SpecError(
                f"{self.param_count()} parameters, at most {TRANSFORMER_PARAMS_MAX}"
            )

    def to_json(self) -> str:
        return json.dumps(self.spec, separators=(",", ":"))

    def param_shapes(self) -> List[Tuple[int, ...]]:
        """Every parameter tensor's shape, in the engine's order (``param.NNN``)."""
        d, f, v = self.d_model, 4 * self.d_model, self.vocab
        out: List[Tuple[int, ...]] = [(v, d), (self.context, d)]
        for _ in range(self.layers):
            out += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, f), (f,), (f, d), (d,)]
        out += [(d,), (d,)]
        if not self.tied:
            out.append((d, v))
        return out

    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes())

    def params(self, weights: Params) -> List[F32]:
        """The parameters in order, checked against the shapes (a list, or ``load_weights``'s
        dict)."""
        return ordered_params(weights, self.param_shapes())

    def logits(self, params: Params, tokens: npt.ArrayLike, *, exact: bool = True) -> F32:
        """The next-token logits (``sequences·positions × vocab``, float32) for a batch of token
        sequences (``sequences × positions``, each at most ``context`` long)."""
        ps = self.params(params)
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids.reshape(1, -1)
        n, t = ids.shape
        if t < 1 or t > self.context:
            raise ValueError(f"sequences of {t} tokens; the context is {self.context}")
        if ids.min() < 0 or ids.max() >= self.vocab:
            raise ValueError(f"token ids must be in 0..{self.vocab}")
        d, h, hd = self.d_model, self.heads, self.head_dim
        scale = np.float32(1.0) / np.sqrt(np.float32(hd))
        x = (ps[0][ids.reshape(-1)] + np.tile(ps[1][:t], (n, 1))).astype(np.float32)
        for layer in range(self.layers):
            p = ps[2 + TENSORS_PER_BLOCK * layer : 2 + TENSORS_PER_BLOCK * (layer + 1)]
            h1 = _layer_norm(x, p[0], p[1], exact)
            qkv = _matmul(h1, p[2], p[3], exact)
            att = np.zeros((n * t, d), dtype=np.float32)
            for b in range(n):
                rows = qkv[b * t : (b + 1) * t]
                for head in range(h):
                    q = rows[:, head * hd : (head + 1) * hd]
                    k = rows[:, d + head * hd : d + (head + 1) * hd]
                    v = rows[:, 2 * d + head * hd : 2 * d + (head + 1) * hd]
                    s = _matmul(q, np.ascontiguousarray(k.T), None, exact) * scale
                    probs = _softmax_causal(s.astype(np.float32), exact)
                    att[b * t : (b + 1) * t, head * hd : (head + 1) * hd] = _matmul(
                        probs, v, None, exact
                    )
            x = (x + _matmul(att, p[4], p[5], exact)).astype(np.float32)
            h2 = _layer_norm(x, p[6], p[7], exact)
            u = _matmul(h2, p[8], p[9], exact)
            x = (x + _matmul(_gelu(u, exact), p[10], p[11], exact)).astype(np.float32)
        f = 2 + TENSORS_PER_BLOCK * self.layers
        hf = _layer_norm(x, ps[f], ps[f + 1], exact)
        head_w = np.ascontiguousarray(ps[0].T) if self.tied else ps[f + 2]
        return _matmul(hf, head_w, None, exact)

    def loss(self, params: Params, tokens: npt.ArrayLike, *, exact: bool = True) -> float:
        """The mean next-token cross-entropy (nats) over windows of ``context + 1`` ids: the
        held-out loss the network certifies, for ``tokens`` a 1-D stream."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        c = self.context
        windows = (len(ids) - 1) // c
        if windows < 1:
            raise ValueError(f"{len(ids)} tokens hold no window of {c}")
        total, count = 0.0, 0
        for w in range(windows):
            seq = ids[w * c : w * c + c + 1]
            z = self.logits(params, seq[:-1], exact=exact).astype(np.float64)
            z = z - z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1))
            total += float((lse - z[np.arange(c), seq[1:]]).sum())
            count += c
        return total / count

    def generate(
        self,
        params: Params,
        prompt: Sequence[int],
        count: int,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        exact: bool = False,
    ) -> List[int]:
        """``count`` tokens after ``prompt``: the most likely next token each time when
        ``temperature`` is 0, else sampled from the softmax at that temperature (numpy's
        generator seeded with ``seed``). Each step reads the last ``context`` tokens."""
        if not prompt:
            raise ValueError("generation needs a prompt of at least one token")
        ps = self.params(params)
        rng = np.random.default_rng(seed)
        out = list(prompt)
        for _ in range(count):
            window = out[-self.context :]
            z = self.logits(ps, np.array([window]), exact=exact)[-1].astype(np.float64)
            if temperature <= 0.0:
                nxt = int(np.argmax(z))
            else:
                z = (z - z.max()) / temperature
                p = np.exp(z)
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(nxt)
        return out[len(prompt) :]

    def generate_text(
        self, params: Params, prompt: str, count: int, **kwargs: Any
    ) -> str:
        """For a byte-level model (tokenizer ``bytes``): ``count`` bytes after ``prompt``,
        decoded as UTF-8 (invalid sequences replaced)."""
        if self.vocab != 256:
            raise ValueError("generate_text needs a byte-level model (vocab 256)")
        ids = self.generate(params, list(prompt.encode("utf-8")), count, **kwargs)
        return bytes(ids).decode("utf-8", errors="replace")
