#!/usr/bin/env python3
"""Train a model on trainmesh with the Python SDK (pip install ./sdk/python), end to end:

    python3 examples/researcher_job.py [--gateway http://127.0.0.1:8080] [--key researcher.key]
        [--dataset ID] [--target 0.95] [--out weights.safetensors]

1. Without --dataset it attaches the UCI 8×8 digits: split into train and held-out with a seeded
   numpy RNG, cut into shards, uploaded to the gateway's node, which serves them to the network
   (the held-out split to evaluators only). With --dataset it uses an attached one.
2. It submits an MLP (64 → 64 relu → 10) trained with Adam, paying the budget into escrow.
3. It follows the job with a progress bar (certified units, held-out accuracy) until it ends.
4. It downloads the certified weights, checked against the hash on the ledger, and measures them
   in numpy on the held-out split: the same count of correct predictions the network certified.

Without --key it signs with the devnet's researcher key (`trainmesh devnet` funds it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from trainmesh import (
    BASE_UNITS_PER_TRAIN,
    Client,
    GatewayError,
    JobFailed,
    Key,
    Model,
    load_digits,
    load_weights,
    ppm_of,
)

MODEL = {"kind": "mlp", "input": 64, "classes": 10, "hidden": [{"units": 64, "activation": "relu"}]}
DIGITS = Path(__file__).resolve().parents[1] / "crates" / "gpu" / "data" / "digits.csv.gz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gateway", default="http://127.0.0.1:8080")
    p.add_argument("--key", help="key file: the researcher's secret as 64 hex characters")
    p.add_argument("--dataset", type=int, help="an attached dataset's id (default: attach digits)")
    p.add_argument("--digits", default=str(DIGITS), help="the digits CSV (.csv or .csv.gz)")
    p.add_argument("--seed", type=int, default=7, help="seed of the train/held-out split")
    p.add_argument("--target", type=float, default=0.95, help="held-out accuracy to reach")
    p.add_argument("--budget", type=float, default=400, help="TRAIN paid into escrow")
    p.add_argument("--out", default="weights.safetensors", help="where to save the weights")
    args = p.parse_args()

    key = Key.from_hex(open(args.key).read()) if args.key else Key.devnet("researcher")
    client = Client(args.gateway)
    x, y = load_digits(args.digits)
    heldout: Optional[Tuple[Any, Any]] = None
    try:
        dataset = args.dataset
        if dataset is None:
            print(f"splitting {len(y)} digits with seed {args.seed}")
            order = np.random.default_rng(args.seed).permutation(len(y))
            cut = len(y) // 5
            heldout = (x[order[:cut]], y[order[:cut]])
            train = (x[order[cut:]], y[order[cut:]])
            dataset = client.attach_dataset(
                key, train, heldout, name="uci-digits-8x8", licence="CC BY 4.0"
            )
            print(f"attached dataset {dataset}")

        job = client.submit_job(
            key,
            MODEL,
            dataset,
            optimizer="adam",
            learning_rate=0.003,
            batch_size=32,
            total_steps=704,
            steps_per_unit=176,
            target_accuracy=args.target,
            budget=int(args.budget * BASE_UNITS_PER_TRAIN),
        )
        print(f"submitted job {job}")
        try:
            final = client.wait(job, progress=True)
        except JobFailed as e:
            print(f"the job did not reach its target: {e}")
            final = e.body
        certified = final["job"]["latest_metric_ppm"]
        if certified is None:
            raise SystemExit("no unit was certified: no weights to download")
        path = client.download(job, args.out, key)
        print(f"certified weights saved to {path}")
    except GatewayError as e:
        raise SystemExit(f"refused: {e.code}: {e.message}") from None

    weights = load_weights(path)
    model = Model(MODEL)
    if heldout is not None:
        correct = model.correct(weights, *heldout)
        n = len(heldout[1])
        print(
            f"held-out accuracy in numpy: {correct}/{n} = {correct / n:.4f} "
            f"(certified {certified / 1e6:.4f}; equal: {ppm_of(correct, n) == certified})"
        )
    else:
        print(f"accuracy on all {len(y)} digits in numpy: {model.accuracy(weights, x, y):.4f}")


if __name__ == "__main__":
    main()
