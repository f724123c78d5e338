"""Train the spec's CIFAR-10 convnet (420,096 parameters) with MXNet 1.9 Gluon.

Standalone: imports only mxnet, numpy and the `cifar10` data module beside it, because
MXNet 1.9.1 needs numpy<1.24 and so an interpreter of its own.  One process drives
`--devices` contexts: each global batch is split across them (as np.array_split would),
a kvstore sums the gradients and one SGD step is taken on the whole batch, which is how
the MXNet run in the original log used several GPUs.  As in the PyTorch trainer, batch
norm statistics are per device (not synchronised).

Variants (`--variant`): `eager` (the default: imperative Gluon, every operator dispatched from Python as
it runs) and `hybrid` (the net and the loss hybridized with static_alloc and static_shape: one cached
graph per call, its memory planned once).  The network and its initialisation are the same.

Output contract (shared by every trainer): one JSON object per line on stdout, an
`epoch` event per epoch and a final `summary` event; anything else is ignored.
"""

from __future__ import annotations

import argparse
import sys
import time

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import nn

import cifar10


def build_model() -> nn.HybridSequential:
    """The spec's net; input sizes are given so that parameters exist before the first batch."""
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(16, 5, use_bias=False, in_channels=3),
        nn.BatchNorm(in_channels=16),
        nn.Activation("relu"),
        nn.MaxPool2D(2, 2),
        nn.Conv2D(32, 5, use_bias=False, in_channels=16),
        nn.BatchNorm(in_channels=32),
        nn.Activation("relu"),
        nn.MaxPool2D(2, 2),
        nn.Dense(500, use_bias=False, in_units=800),
        nn.BatchNorm(in_channels=500),
        nn.Activation("relu"),
        nn.Dense(10, use_bias=False, in_units=500),
    )
    return net


def device_images(images, ctx):
    """uint8 NCHW to the context as they are, scaled to float32 in [0, 1] there (pixels / 255)."""
    return mx.nd.array(images, ctx=ctx, dtype="uint8").astype("float32") / 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cifar10.trainer_arguments(__doc__.splitlines()[0], variants=("eager", "hybrid"))
    p.add_argument("--devices", type=int, default=1, help="contexts of that kind to use in this process")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    make_ctx = mx.gpu if args.device == "cuda" else mx.cpu
    ctxs = [make_ctx(i) for i in range(args.devices)]
    cifar10.mark("ready")

    train, test = cifar10.load_or_exit(args.data_dir, args.train_images, args.test_images)
    n = len(train.labels)
    steps = n // args.batch_size
    if steps == 0:
        raise SystemExit(f"batch size {args.batch_size} is larger than the {n} training images")
    # The whole training set lives on every context (sent as uint8, scaled to [0, 1] there); batches are
    # gathered there with `take`.
    xs = [device_images(train.images, c) for c in ctxs]
    ys = [mx.nd.array(train.labels, ctx=c, dtype="float32") for c in ctxs]
    mx.nd.waitall()
    cifar10.mark("data")  # building the model and the trainer is first-epoch work, as in every trainer

    mx.random.seed(args.seed)
    net = build_model()
    net.initialize(mx.init.Uniform(0.1), ctx=ctxs)  # batch norm keeps its own ones/zeros init
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    if args.variant == "hybrid":
        net.hybridize(static_alloc=True, static_shape=True)
        loss_fn.hybridize(static_alloc=True, static_shape=True)
    parameters = sum(p.data(ctxs[0]).size for p in net.collect_params().values() if p.grad_req != "null")
    trainer = gluon.Trainer(
        net.collect_params(),
        "sgd",
        {"learning_rate": args.lr, "momentum": args.momentum, "wd": 0.0},
        kvstore="device" if args.device == "cuda" else "local",
    )
    cifar10.emit(
        "start",
        framework="mxnet",
        framework_version=mx.__version__,
        variant=args.variant,
        devices=len(ctxs),
        device=args.device,
        train_images=n,
        steps_per_epoch=steps,
        parameters=parameters,
    )

    images = steps * args.batch_size
    for epoch in range(1, args.epochs + 1):
        order = cifar10.epoch_order(n, args.seed, epoch)[:images].reshape(steps, args.batch_size)
        index = gluon.utils.split_and_load(mx.nd.array(order, dtype="int32"), ctxs, batch_axis=1, even_split=False)
        losses: list[list] = [[] for _ in ctxs]
        mx.nd.waitall()
        start = time.perf_counter()
        for s in range(steps):
            batch = [(x.take(i[s]), y.take(i[s])) for x, y, i in zip(xs, ys, index)]
            with autograd.record():
                step_losses = [loss_fn(net(xb), yb) for xb, yb in batch]
            autograd.backward(step_losses)
            trainer.step(args.batch_size)  # gradients are per-sample sums: divide by the global batch
            for kept, loss in zip(losses, step_losses):  # per-sample losses, summed once per epoch
                kept.append(loss)
        loss_sum = sum(mx.nd.add_n(*kept).sum().asscalar() for kept in losses)
        mx.nd.waitall()
        seconds = time.perf_counter() - start
        cifar10.emit(
            "epoch",
            epoch=epoch,
            seconds=seconds,
            images=images,
            images_per_s=images / seconds,
            loss=loss_sum / images,
        )

    hits = 0
    for i in range(0, len(test.labels), 1000):
        out = net(device_images(test.images[i : i + 1000], ctxs[0]))
        hits += int((out.argmax(axis=1) == mx.nd.array(test.labels[i : i + 1000], ctx=ctxs[0])).sum().asscalar())
    cifar10.emit(
        "summary",
        test_accuracy=hits / max(1, len(test.labels)),
        test_images=len(test.labels),
        framework="mxnet",
        framework_version=mx.__version__,
        variant=args.variant,
        parameters=parameters,
        devices=len(ctxs),
        device=args.device,
        train_images=n,
        batch_size=args.batch_size,
        epochs=args.epochs,
        synthetic_data=cifar10.is_synthetic(args.data_dir),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
