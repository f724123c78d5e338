"""Train the spec's CIFAR-10 convnet (420,096 parameters) with PyTorch.

Standalone: imports only torch, numpy and the `cifar10` data module beside it, so it runs
in whatever interpreter holds the PyTorch build to be measured.  One process trains on one
device; under `torchrun` every rank takes its share of each global batch and
DistributedDataParallel sums the gradients (gloo on the CPU, NCCL on GPUs).

Output contract (shared by every trainer): one JSON object per line on stdout, an
`epoch` event per epoch and a final `summary` event; anything else is ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import cifar10

MIB = 1024 * 1024


def build_model() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 5, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500, bias=False),
        nn.BatchNorm1d(500),
        nn.ReLU(),
        nn.Linear(500, 10, bias=False),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(m.weight, -0.1, 0.1)
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cifar10.trainer_arguments(__doc__.splitlines()[0])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1:
        torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo")
    if rank == 0:
        cifar10.mark("ready")

    train, test = cifar10.load_or_exit(args.data_dir, args.train_images, args.test_images)
    x_train = torch.from_numpy(train.images).to(device)
    y_train = torch.from_numpy(train.labels).to(device)
    n = len(train.labels)
    steps = n // args.batch_size
    if steps == 0:
        raise SystemExit(f"batch size {args.batch_size} is larger than the {n} training images")

    torch.manual_seed(args.seed)
    model = build_model().to(device)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    if rank == 0:
        cifar10.mark("data")
        cifar10.emit(
            "start",
            framework="pytorch",
            framework_version=torch.__version__,
            devices=world,
            device=args.device,
            train_images=n,
            steps_per_epoch=steps,
            parameters=parameters,
        )

    for epoch in range(1, args.epochs + 1):
        order = cifar10.epoch_order(n, args.seed, epoch)[: steps * args.batch_size]
        index = torch.from_numpy(
            np.stack([np.array_split(b, world)[rank] for b in order.reshape(steps, args.batch_size)])
        ).to(device)
        net.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        start = time.perf_counter()
        for idx in index:
            xb, yb = x_train[idx], y_train[idx]
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            correct += (out.argmax(1) == yb).sum()
        totals = torch.stack([loss_sum, correct.to(loss_sum.dtype)])
        if world > 1:
            torch.distributed.all_reduce(totals)
        if args.device == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if rank == 0:
            cifar10.emit(
                "epoch",
                epoch=epoch,
                seconds=seconds,
                images=steps * args.batch_size,
                images_per_s=steps * args.batch_size / seconds,
                loss=totals[0].item() / (steps * world),
                accuracy=totals[1].item() / (steps * args.batch_size),
            )

    summary = {
        "framework": "pytorch",
        "framework_version": torch.__version__,
        "parameters": parameters,
        "devices": world,
        "device": args.device,
        "train_images": n,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "synthetic_data": cifar10.is_synthetic(args.data_dir),
    }
    if args.device == "cuda":
        peaks = torch.tensor(
            [torch.cuda.max_memory_reserved(device), torch.cuda.max_memory_allocated(device)],
            device=device,
            dtype=torch.float64,
        )
        gathered = [torch.zeros_like(peaks) for _ in range(world)]
        if world > 1:
            torch.distributed.all_gather(gathered, peaks)
        else:
            gathered = [peaks]
        summary["allocator_peak_mib"] = {
            "reserved": [g[0].item() / MIB for g in gathered],
            "allocated": [g[1].item() / MIB for g in gathered],
        }
        summary["cuda_version"] = torch.version.cuda
        summary["cudnn_version"] = torch.backends.cudnn.version()
        summary["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version())) if world > 1 else None
    if rank == 0:
        model.eval()
        x_test, y_test = torch.from_numpy(test.images), torch.from_numpy(test.labels)
        hits = 0
        with torch.no_grad():
            for i in range(0, len(y_test), 1000):
                hits += (model(x_test[i : i + 1000].to(device)).argmax(1).cpu() == y_test[i : i + 1000]).sum().item()
        cifar10.emit("summary", test_accuracy=hits / max(1, len(y_test)), test_images=len(y_test), **summary)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
