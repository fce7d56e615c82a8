"""PyTorch CPU reference for the trainmesh transformer: the same decoder-only model (pre-LayerNorm
blocks, causal multi-head attention, tanh-GELU MLP, tied output head), the same initial weights,
the same batches in the same order, the same AdamW (decay on tensors of rank 2, warm-up then
cosine, global-norm clipping) and the same number of steps as
`cargo run --release -p trainmesh-gpu --example bench -- --model transformer`, which writes the
exchange directory this script reads:

  config.json        model shape, optimizer, batch, steps
  init.safetensors   the initial parameters (param.NNN, trainmesh's order and [in, out] layout)
  train.u16 / heldout.u16   the token ids (little-endian u16)
  batches.u32        the window index of every sample of every step (steps × batch)

Modes: `--quality` trains every step and prints the held-out loss; `--speed --threads N` times
steps on N threads. The last line printed is one JSON object.
"""

import argparse
import json
import math
import os
import sys
import time


def load(args):
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(args.dir, "config.json")))
    init = load_file(os.path.join(args.dir, "init.safetensors"))
    params = [torch.tensor(init["param.%03d" % i]) for i in range(len(init))]
    train = np.fromfile(os.path.join(args.dir, "train.u16"), dtype="<u2").astype(np.int64)
    heldout = np.fromfile(os.path.join(args.dir, "heldout.u16"), dtype="<u2").astype(np.int64)
    batches = np.fromfile(os.path.join(args.dir, "batches.u32"), dtype="<u4").astype(np.int64)
    return cfg, params, torch.tensor(train), torch.tensor(heldout), batches.reshape(cfg["steps"], cfg["batch"])


def forward(cfg, p, idx):
    import torch
    import torch.nn.functional as F

    L, D, H, ctx = cfg["layers"], cfg["d_model"], cfg["heads"], cfg["context"]
    B, T = idx.shape
    x = p[0][idx] + p[1][:T]
    for l in range(L):
        b = 2 + 12 * l
        h = F.layer_norm(x, (D,), p[b], p[b + 1], 1e-5)
        qkv = h @ p[b + 2] + p[b + 3]
        q, k, v = qkv.split(D, dim=2)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a.transpose(1, 2).reshape(B, T, D)
        x = x + (a @ p[b + 4] + p[b + 5])
        h = F.layer_norm(x, (D,), p[b + 6], p[b + 7], 1e-5)
        u = F.gelu(h @ p[b + 8] + p[b + 9], approximate="tanh")
        x = x + (u @ p[b + 10] + p[b + 11])
    f = 2 + 12 * L
    x = F.layer_norm(x, (D,), p[f], p[f + 1], 1e-5)
    head = p[0].t() if cfg["tied"] else p[f + 2]
    return x @ head


def lr_at(o, step):
    if step < o["warmup_steps"]:
        return o["lr"] * (step + 1) / o["warmup_steps"]
    span = max(o["decay_steps"] - o["warmup_steps"], 1)
    prog = min(step - o["warmup_steps"], span) / span
    return o["min_lr"] + 0.5 * (o["lr"] - o["min_lr"]) * (1 + math.cos(math.pi * prog))


def windows(data, ids, ctx):
    import torch

    starts = torch.tensor(ids) * ctx
    offs = torch.arange(ctx + 1)
    w = data[starts[:, None] + offs[None, :]]
    return w[:, :-1], w[:, 1:]


def heldout_loss(cfg, p, heldout):
    import torch
    import torch.nn.functional as F

    ctx = cfg["context"]
    n = (len(heldout) - 1) // ctx
    total, count = 0.0, 0
    with torch.no_grad():
        for first in range(0, n, 8):
            x, y = windows(heldout, list(range(first, min(first + 8, n))), ctx)
            z = forward(cfg, p, x)
            total += F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return total / count


def train(cfg, params, data, batches, steps, timed_from=None):
    import torch
    import torch.nn.functional as F

    p = [t.clone().requires_grad_(True) for t in params]
    o = cfg["optimizer"]
    groups = [
        {"params": [t for t in p if t.dim() >= 2], "weight_decay": o["weight_decay"]},
        {"params": [t for t in p if t.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    t0 = None
    for step in range(steps):
        if timed_from is not None and step == timed_from:
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(o, step)
        x, y = windows(data, batches[step].tolist(), cfg["context"])
        z = forward(cfg, p, x)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o["clip_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(p, o["clip_norm"])
        opt.step()
    elapsed = time.perf_counter() - t0 if t0 is not None else None
    return p, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg, params, data, heldout, batches = load(args)
    out = {"torch": torch.__version__, "threads": args.threads}
    if args.quality:
        p, _ = train(cfg, params, data, batches, cfg["steps"])
        out["heldout_loss"] = heldout_loss(cfg, p, heldout)
        out["initial_heldout_loss"] = heldout_loss(cfg, params, heldout)
    if args.speed:
        n = args.warmup + args.steps
        _, elapsed = train(cfg, params, data, batches, min(n, cfg["steps"]), timed_from=args.warmup)
        timed = min(n, cfg["steps"]) - args.warmup
        out["train_tokens_per_s"] = timed * cfg["batch"] * cfg["context"] / elapsed
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
