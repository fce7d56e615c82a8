"""Checkpoints as the network stores them: safetensors with tensors ``param.NNN`` (the model's
parameters, weight then bias per layer) and ``state.NNN`` (the optimizer's state), float32, and
one metadata entry ``trainmesh`` = ``{"format": 1, "model": <spec hash>, "step": <n>}``
(crates/gpu/src/checkpoint.rs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import numpy.typing as npt

PathLike = Union[str, Path]


def load_weights(path: PathLike, framework: str = "np") -> Dict[str, Any]:
    """Every tensor of a checkpoint by name: numpy arrays (``framework="np"``) or torch tensors
    (``"pt"``, when torch is installed). ``Model.params`` picks the parameters out."""
    p = Path(path)
    if framework in ("np", "numpy"):
        from safetensors.numpy import load_file

        return dict(load_file(str(p)))
    if framework in ("pt", "torch"):
        try:
            import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            raise ImportError(
                'load_weights(..., framework="pt") needs PyTorch: pip install torch '
                '(or load numpy arrays with framework="np")'
            ) from None
        from safetensors.torch import load_file as load_torch

        return dict(load_torch(str(p)))
    raise ValueError(f"unknown framework {framework!r}: np or pt")


def checkpoint_metadata(path: PathLike) -> Dict[str, Any]:
    """The checkpoint's ``trainmesh`` metadata: ``{"format", "model", "step"}``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
    if "trainmesh" not in meta:
        raise ValueError(f"{path}: not a trainmesh checkpoint (no trainmesh metadata)")
    return dict(json.loads(meta["trainmesh"]))


def parameters(weights: Dict[str, Any]) -> List[npt.NDArray[np.float32]]:
    """The ``param.NNN`` tensors of a loaded checkpoint, in order, as numpy arrays."""
    names = sorted(k for k in weights if k.startswith("param."))
    out = []
    for k in names:
        v = weights[k]
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out.append(np.asarray(v, dtype=np.float32))
    return out
