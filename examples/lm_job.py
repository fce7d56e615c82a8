#!/usr/bin/env python3
"""Train a language model on trainmesh with the Python SDK (pip install ./sdk/python), then write
with it:

    python3 examples/lm_job.py [--gateway http://127.0.0.1:8080] [--key researcher.key]
        [--dataset ID] [--target-loss 2.6] [--out lm.safetensors] [--prompt "The "]

With a devnet started by `cargo run --release -p trainmesh -- devnet --job lm` (its provider
attaches the quotations of Debian's fortunes package, byte-tokenized):

1. It finds the text dataset (the one named "fortunes", or --dataset) and submits a byte-level
   transformer (2 blocks, d 64, 4 heads, context 64) trained with AdamW, target held-out loss.
2. It follows the job with a progress bar until it ends.
3. It downloads the certified weights (checked against the hash on the ledger) and continues
   the prompt with them in numpy: the engine's forward pass, greedy or sampled.

Without --key it signs with the devnet's researcher key (`trainmesh devnet` funds it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from trainmesh import Client, Key, Model, load_weights

MODEL = {"kind": "transformer", "layers": 2, "d_model": 64, "heads": 4, "context": 64, "vocab": 256}


def find_text_dataset(client: Client, name: str = "fortunes") -> int:
    for d in client.datasets():
        if d["spec"]["name"] == name:
            return int(d["id"])
    raise SystemExit(f"no dataset named {name!r} is attached: start the devnet with --job lm")


def main(argv: Optional[List[str]] = None, key: Optional[Key] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", default="http://127.0.0.1:8080")
    ap.add_argument("--key", help="key file: the researcher's secret as 64 hex characters")
    ap.add_argument("--dataset", type=int)
    ap.add_argument("--target-loss", type=float, default=2.6, help="nats per byte")
    ap.add_argument("--out", type=Path, default=Path("lm.safetensors"))
    ap.add_argument("--prompt", default="The ")
    ap.add_argument("--temperature", type=float, default=0.8, help="0: always the likeliest byte")
    args = ap.parse_args(argv)

    client = Client(args.gateway)
    if key is None:
        key = Key.from_hex(open(args.key).read()) if args.key else Key.devnet("researcher")
    dataset = args.dataset if args.dataset is not None else find_text_dataset(client)
    job = client.submit_job(
        key,
        MODEL,
        dataset,
        optimizer="adamw",
        learning_rate=0.01,
        batch_size=16,
        total_steps=600,
        steps_per_unit=200,
        target_loss=args.target_loss,
    )
    print(f"job {job} submitted on dataset {dataset}")
    final = client.wait(job, progress=True, timeout=1800)["job"]
    if final["state"] != "Completed":
        raise SystemExit(f"job {job} ended {final['state']}")
    loss = final["latest_metric_ppm"] / 1e6
    print(f"certified held-out loss {loss:.4f} nats/byte ({loss / math.log(2):.3f} bits/byte)")

    path = client.download(job, args.out, key, expected=final["latest_checkpoint"])
    weights = load_weights(path)
    model = Model(MODEL)
    text = model.generate_text(weights, args.prompt, 120, temperature=args.temperature)
    print(f"{args.prompt}{text}")
    return {"job": job, "loss": loss, "weights": path, "text": text, "model": model}


if __name__ == "__main__":
    main()
