"""PyTorch CPU baseline for the trainmesh-gpu bench: the same MLP (784-256-128-10, ReLU), the same
batch (128), the same optimizer (Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8) and the same
measurement (warm-up steps, then timed steps over shuffled Fashion-MNIST batches) as
`cargo run --release -p trainmesh-gpu --example bench`.

Run it through pytorch_baseline.sh (which makes the virtualenv, sets OMP_WAIT_POLICY=PASSIVE and
unsets OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this command only). Prints one JSON object as its
last line: torch version, the kernels that ran (BLAS, ATen CPU capability, the ISA MKL and oneDNN
report), and train_samples_per_s for every requested thread count.
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def load_fashion_mnist(limit):
    import torch

    images = os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_MNIST_DIR, "train-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None
    with gzip.open(images, "rb") as f:
        raw = bytearray(f.read())
    n = int.from_bytes(raw[4:8], "big")
    x = torch.frombuffer(raw, dtype=torch.uint8, offset=16).reshape(n, 784)[:limit]
    with gzip.open(labels, "rb") as f:
        y = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8, offset=8)[:limit]
    return x.to(torch.float32) / 255.0, y.to(torch.int64)


def kernel_probe():
    """Which kernels a 128x784 @ 784x256 fp32 matmul runs: MKL and oneDNN say it themselves."""
    code = (
        "import torch; a=torch.rand(128,784); b=torch.rand(784,256); "
        "torch.nn.functional.linear(a, b.t()); torch.mm(a, b)"
    )
    env = dict(os.environ, MKL_VERBOSE="1", ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    ).stdout
    mkl = [l for l in out.splitlines() if l.startswith("MKL_VERBOSE")]
    onednn = [l for l in out.splitlines() if l.startswith("onednn_verbose") and ",exec," in l]
    isa = [l for l in out.splitlines() if "cpu,isa" in l or "info,cpu,isa" in l]
    return {
        "mkl_verbose": mkl[:2],
        "onednn_exec": onednn[:2],
        "onednn_isa": isa[:1],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions; the best is reported")
    p.add_argument("--probe", action="store_true", help="also report the kernels MKL/oneDNN ran")
    args = p.parse_args()

    import torch

    torch.manual_seed(1)
    data = load_fashion_mnist(60000)
    if data is None:
        # Throughput does not depend on the values; the bench says which data it used.
        x = torch.rand(60000, 784)
        y = torch.randint(0, 10, (60000,))
        source = "random"
    else:
        x, y = data
        source = "fashion-mnist"
    batch = 128
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    lapack = re.search(r"LAPACK_INFO=([^,\s]+)", config)
    result = {
        "torch": torch.__version__,
        "data": source,
        "blas": blas.group(1) if blas else None,
        "lapack": lapack.group(1) if lapack else None,
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkl_available": torch.backends.mkl.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "openblas_env": {
            k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        },
        "train_samples_per_s": {},
    }
    for t in [int(v) for v in args.threads.split(",") if v]:
        torch.set_num_threads(t)
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        loss_fn = torch.nn.CrossEntropyLoss()
        perm = torch.randperm(x.shape[0])
        pos = [0]

        def step():
            i = pos[0]
            pos[0] = (i + batch) % (x.shape[0] - batch)
            idx = perm[i : i + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            return loss

        for _ in range(args.warmup):
            step()
        best = 0.0
        for _ in range(args.reps):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            best = max(best, args.steps * batch / (time.perf_counter() - start))
        result["train_samples_per_s"][str(t)] = best
        print(f"pytorch {torch.__version__}: {t} thread(s): {best:.0f} samples/s", file=sys.stderr)
    if args.probe:
        result.update(kernel_probe())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
