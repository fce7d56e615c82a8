"""PyTorch on a CUDA GPU, the baseline the GPU bench compares the device kernels with.

    python3 crates/gpu/bench/torch_cuda.py [--n 4096] [--reps 5] [--steps 50]

fp32 everywhere, TF32 off (the device kernels compute true fp32): the GEMM's GFLOP/s at n×n·n×n
(best of --reps timed products, synchronized), and training samples/s of the bench's MLP
784-256-128-10 with Adam at batch 128 (best of --reps timed runs of --steps steps). Exits 3 when
torch or CUDA is missing. The last line printed is one JSON object.
"""

import argparse
import json
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("torch_cuda: no torch", file=sys.stderr)
        sys.exit(3)
    if not torch.cuda.is_available():
        print("torch_cuda: torch has no CUDA device", file=sys.stderr)
        sys.exit(3)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    n = args.n
    a = torch.rand(n, n, device=dev, dtype=torch.float32)
    b = torch.rand(n, n, device=dev, dtype=torch.float32)
    torch.mm(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(args.reps):
        start = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    gemm_gflops = 2.0 * n**3 / best / 1e9

    torch.manual_seed(1)
    batch = 128
    x = torch.rand(60000, 784, device=dev)
    y = torch.randint(0, 10, (60000,), device=dev)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss()
    perm = torch.randperm(x.shape[0], device=dev)
    pos = [0]

    def step():
        i = pos[0]
        pos[0] = (i + batch) % (x.shape[0] - batch)
        idx = perm[i : i + batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    train = 0.0
    for _ in range(args.reps):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        train = max(train, args.steps * batch / (time.perf_counter() - start))
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "tf32": False,
        "gemm_n": n,
        "gemm_gflops": gemm_gflops,
        "train_samples_per_s": train,
        "train_model": "mlp 784-256-128-10, adam, batch 128",
    }
    print(f"pytorch {torch.__version__} on {result['device']}: GEMM {n}³ {gemm_gflops:.0f} GFLOP/s, "
          f"training {train:.0f} samples/s", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
