"""Train the spec's CIFAR-10 convnet (420,096 parameters) with PyTorch.

Standalone: imports only torch, numpy and the `cifar10` data module beside it, so it runs
in whatever interpreter holds the PyTorch build to be measured.  One process trains on one
device; under `torchrun` every rank takes its share of each global batch and
DistributedDataParallel sums the gradients (gloo on the CPU, NCCL on GPUs).

Variants (`--variant`): `eager` (the default, PyTorch as most people write it) and `graph`: on the CPU
`torch.compile(model)` (default mode; under DDP, DDP wraps the compiled network: compiling the DDP module
itself graph-breaks inside DDP's forward in PyTorch 2.13 and leaves the network eager); on CUDA the
whole train step (gather, forward, loss, backward, SGD step, loss sum) captured once as a CUDA graph with
static buffers and replayed each step (under DDP after the 11 eager warm-up steps DDP needs; those
warm-up steps are undone, so training starts from the same weights as the eager run).

Output contract (shared by every trainer): one JSON object per line on stdout, an
`epoch` event per epoch and a final `summary` event; anything else is ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch._dynamo  # torch.optim imports it at the first optimizer (1.1 s here): count it as start-up
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
    p = cifar10.trainer_arguments(__doc__.splitlines()[0], variants=("eager", "graph"))
    return p.parse_args(argv)


def device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NCHW to the device as they are, scaled to float32 in [0, 1] there (pixels / 255)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only memory map of the cache: only ever read
        raw = torch.from_numpy(images)
    return raw.to(device).float().div_(255)


Step = Callable[[torch.Tensor], None]


def eager_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, losses: list) -> Step:
    """One SGD step per call; the loss stays on the device (summed once per epoch: no per-step host sync)."""

    def step(idx: torch.Tensor) -> None:
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    return step


def cuda_graph_step(
    net: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    total: torch.Tensor,
    warmup: int,
) -> Step:
    """The whole step captured as one CUDA graph: a call copies the batch's indices into the static index
    buffer and replays it (the loss is added to `total` inside the graph).

    Warm-up steps on a side stream come first (the allocator, cuDNN and DDP settle; DDP needs 11), then
    every parameter, buffer and momentum buffer is put back, so the replays train from the same state as
    the eager run; with the momentum buffers zeroed, the first replay's update equals eager SGD's first.
    """
    device = x.device
    static_idx = torch.arange(batch, device=device)
    saved = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]

    def body() -> None:
        loss = F.cross_entropy(net(x[static_idx]), y[static_idx])
        loss.backward()
        opt.step()
        total.add_(loss.detach())

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    with torch.no_grad():
        for t, value in zip((*model.parameters(), *model.buffers()), saved):
            t.copy_(value)
        for state in opt.state.values():
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"].zero_()
        total.zero_()
    opt.zero_grad(set_to_none=True)  # the capture allocates the gradients in the graph's pool: static
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()

    def step(idx: torch.Tensor) -> None:
        static_idx.copy_(idx)
        graph.replay()

    return step


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
    if args.variant == "graph" and args.device == "cuda" and world > 1 and torch.cuda.nccl.version() < (2, 9, 6):
        raise SystemExit(  # a status `unsupported` (outcome.UNSUPPORTED_TEXT), not a crash
            f"variant graph does not support {world} GPUs with NCCL {torch.cuda.nccl.version()}: "
            "capturing DDP's all-reduce in a CUDA graph needs NCCL >= 2.9.6"
        )
    if world > 1:
        torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo")
    if rank == 0:
        cifar10.mark("ready")

    train, test = cifar10.load_or_exit(args.data_dir, args.train_images, args.test_images)
    x_train = device_images(train.images, device)
    y_train = torch.from_numpy(np.array(train.labels)).to(device)  # a copy: the cache's memory map is read-only
    n = len(train.labels)
    steps = n // args.batch_size
    if steps == 0:
        raise SystemExit(f"batch size {args.batch_size} is larger than the {n} training images")
    if args.device == "cuda":
        torch.cuda.synchronize(device)
    if rank == 0:  # the data is on the device; building the step (compile set-up, graph capture) is first-epoch work
        cifar10.mark("data")

    torch.manual_seed(args.seed)
    model = build_model().to(device)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cuda_graph = args.variant == "graph" and args.device == "cuda"
    if world > 1 and cuda_graph:  # DDP is built on a side stream when its steps are to be captured
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
        torch.cuda.current_stream(device).wait_stream(side)
    else:
        # compiled at the first step (the first epoch pays for it); evaluation runs `model`, eager
        net = torch.compile(model) if args.variant == "graph" and not cuda_graph else model
        net = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
    rank_batch = len(np.array_split(np.arange(args.batch_size), world)[rank])
    losses: list[torch.Tensor] = []
    total = torch.zeros((), device=device)
    if rank == 0:
        cifar10.emit(
            "start",
            framework="pytorch",
            framework_version=torch.__version__,
            variant=args.variant,
            devices=world,
            device=args.device,
            train_images=n,
            steps_per_epoch=steps,
            parameters=parameters,
        )
    if cuda_graph:
        step = cuda_graph_step(net, model, opt, x_train, y_train, rank_batch, total, 11 if world > 1 else 3)
    else:
        step = eager_step(net, opt, x_train, y_train, losses)

    for epoch in range(1, args.epochs + 1):
        order = cifar10.epoch_order(n, args.seed, epoch)[: steps * args.batch_size]
        index = torch.from_numpy(
            np.stack([np.array_split(b, world)[rank] for b in order.reshape(steps, args.batch_size)])
        ).to(device)
        net.train()
        start = time.perf_counter()
        for idx in index:
            step(idx)
        loss_sum = torch.stack(losses).sum() if losses else total.clone()
        losses.clear()
        total.zero_()
        if world > 1:
            torch.distributed.all_reduce(loss_sum)
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
                loss=loss_sum.item() / (steps * world),
            )

    summary = {
        "framework": "pytorch",
        "framework_version": torch.__version__,
        "variant": args.variant,
        # operations torch.compile captured into graphs: on the CPU, 0 would mean the graph variant ran eager
        # (on CUDA the graph variant is a CUDA graph of the eager step, without torch.compile: 0 there)
        "compiled_ops": torch._dynamo.utils.counters["stats"]["calls_captured"],
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
        x_test, y_test = device_images(test.images, device), torch.from_numpy(np.array(test.labels)).to(device)
        hits = 0
        with torch.no_grad():
            for i in range(0, len(y_test), 1000):
                hits += (model(x_test[i : i + 1000]).argmax(1) == y_test[i : i + 1000]).sum().item()
        cifar10.emit("summary", test_accuracy=hits / max(1, len(y_test)), test_images=len(y_test), **summary)
    if world > 1:
        leave_process_group()
    return 0


def leave_process_group(timeout_s: float = 30.0) -> None:
    """Barrier, then a bounded destroy_process_group, then exit without interpreter finalization.

    Everything is reported by now.  destroy_process_group can hang (pytorch#75097; seen here once in a gloo
    rank under load), and gloo's threads can crash a finalizing interpreter: either would turn a measured run
    into a timeout.  A stuck teardown ends after `timeout_s` instead (it shows in the teardown phase).
    """
    torch.distributed.barrier()  # unbounded: it waits for rank 0's evaluation (the run's timeout bounds it)
    teardown = threading.Thread(target=torch.distributed.destroy_process_group, daemon=True)
    teardown.start()
    teardown.join(timeout_s)
    if teardown.is_alive():
        print(f"destroy_process_group did not return within {timeout_s:g} s; exiting", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
