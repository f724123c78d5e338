"""Train the spec's CIFAR-10 convnet (420,096 parameters) with plain JAX.

Standalone: imports only jax, numpy and the `cifar10` data module beside it, so it runs in
whatever interpreter holds the JAX build to be measured.  One process drives `--devices`
devices: a mesh with a "data" axis, parameters replicated, each global batch split along
it, and XLA inserts the all-reduces; batch norm therefore sees the whole global batch, so
the maths matches the single-device run.

Output contract (shared by every trainer): one JSON object per line on stdout, an
`epoch` event per epoch and a final `summary` event; anything else is ignored.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import cifar10

MIB = 1024 * 1024
BN_MOMENTUM = 0.9  # running = 0.9 * running + 0.1 * batch, the frameworks' default
BN_EPS = 1e-5
WEIGHTS = {"conv1": (16, 3, 5, 5), "conv2": (32, 16, 5, 5), "fc1": (800, 500), "fc2": (500, 10)}
NORMS = {"bn1": 16, "bn2": 32, "bn3": 500}

# Imported in main(), once the XLA environment variables are set (they are read at import).
jax = jnp = lax = None


def init(key):
    """Weights Uniform(-0.1, 0.1), batch-norm scale 1 and shift 0; running stats apart (not trained)."""
    keys = jax.random.split(key, len(WEIGHTS))
    params = {
        name: jax.random.uniform(k, shape, jnp.float32, -0.1, 0.1) for (name, shape), k in zip(WEIGHTS.items(), keys)
    }
    params |= {name: {"scale": jnp.ones(c), "shift": jnp.zeros(c)} for name, c in NORMS.items()}
    stats = {name: {"mean": jnp.zeros(c), "var": jnp.ones(c)} for name, c in NORMS.items()}
    return params, stats


def batch_norm(x, p, s, train):
    """Normalise over every axis but channels (axis 1): batch statistics in training, running ones in eval."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if train:
        mean, var = x.mean(axes), x.var(axes)
        s = {
            "mean": BN_MOMENTUM * s["mean"] + (1 - BN_MOMENTUM) * mean,
            "var": BN_MOMENTUM * s["var"] + (1 - BN_MOMENTUM) * var,
        }
    else:
        mean, var = s["mean"], s["var"]
    y = (x - mean.reshape(shape)) * lax.rsqrt(var.reshape(shape) + BN_EPS)
    return y * p["scale"].reshape(shape) + p["shift"].reshape(shape), s


def forward(params, stats, x, train):
    """NCHW in, logits out; returns the updated running stats too."""
    new = {}
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        x = lax.conv_general_dilated(x, params[conv], (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        x, new[bn] = batch_norm(x, params[bn], stats[bn], train)
        x = lax.reduce_window(jax.nn.relu(x), -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x, new["bn3"] = batch_norm(x.reshape(len(x), -1) @ params["fc1"], params["bn3"], stats["bn3"], train)
    return jax.nn.relu(x) @ params["fc2"], new


def scale(images):
    """uint8 pixels to float32 in [0, 1] (pixels / 255), run on the device."""
    return images.astype(jnp.float32) / 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cifar10.trainer_arguments(__doc__.splitlines()[0], variants=("jit",))  # JAX is always run jitted
    p.add_argument("--devices", type=int, default=1, help="devices of that kind this process trains on")
    return p.parse_args(argv)


def set_xla_env(args: argparse.Namespace) -> None:
    """What the harness sets, for standalone runs: no GPU preallocation (memory is measured), N host devices."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU run opens no GPU context
        flag = "--xla_force_host_platform_device_count"
        if args.devices > 1 and flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={args.devices}".strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.devices < 1 or args.batch_size % args.devices:
        raise SystemExit(f"batch size {args.batch_size} must split evenly over {args.devices} devices")
    set_xla_env(args)
    global jax, jnp, lax
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    kind = "gpu" if args.device == "cuda" else "cpu"
    try:
        available = jax.devices(kind)
    except RuntimeError as e:
        raise SystemExit(f"JAX has no {kind} backend here: {e}") from None
    if len(available) < args.devices:
        raise SystemExit(f"asked for {args.devices} {kind} devices, JAX sees {len(available)}")
    devices = available[: args.devices]
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))
    steps_sharding = NamedSharding(mesh, P(None, "data"))
    cifar10.mark("ready")

    train, test = cifar10.load_or_exit(args.data_dir, args.train_images, args.test_images)
    n = len(train.labels)
    steps = n // args.batch_size
    if steps == 0:
        raise SystemExit(f"batch size {args.batch_size} is larger than the {n} training images")
    x_train, y_train = jax.device_put((train.images, train.labels.astype(np.int32)), replicated)  # uint8 over
    x_train = jax.jit(scale, out_shardings=replicated)(x_train)  # float32 [0, 1], on the device
    jax.block_until_ready((x_train, y_train))
    cifar10.mark("data")  # building the model and the step (each op of `init` compiles) is first-epoch work

    params, stats = jax.device_put(init(jax.random.key(args.seed)), replicated)
    velocity = jax.tree.map(jnp.zeros_like, params)
    parameters = sum(p.size for p in jax.tree.leaves(params))
    version = jax.__version__
    cifar10.emit(
        "start",
        framework="jax",
        framework_version=version,
        variant=args.variant,
        devices=args.devices,
        device=args.device,
        train_images=n,
        steps_per_epoch=steps,
        parameters=parameters,
    )

    def train_step(state, loss_sum, x_all, y_all, index, i):
        """One SGD step on global batch `index[i]`, gathered from the resident training set."""
        params, velocity, stats = state
        x, y = lax.with_sharding_constraint((x_all[index[i]], y_all[index[i]]), batch)

        def loss_fn(params):
            logits, new_stats = forward(params, stats, x, True)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean(), new_stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        velocity = jax.tree.map(lambda v, g: args.momentum * v + g, velocity, grads)  # PyTorch-style SGD
        params = jax.tree.map(lambda p, v: p - args.lr * v, params, velocity)
        return (params, velocity, stats), loss_sum + loss  # as in every trainer: no per-step accuracy

    step = jax.jit(
        train_step,
        donate_argnums=(0, 1),
        in_shardings=(replicated, replicated, replicated, replicated, steps_sharding, replicated),
        out_shardings=(replicated, replicated),
    )
    state = (params, velocity, stats)
    for epoch in range(1, args.epochs + 1):
        order = cifar10.epoch_order(n, args.seed, epoch)[: steps * args.batch_size]
        index = jax.device_put(order.reshape(steps, args.batch_size).astype(np.int32), steps_sharding)
        loss_sum = jax.device_put(np.float32(0), replicated)
        start = time.perf_counter()
        for i in range(steps):
            state, loss_sum = step(state, loss_sum, x_train, y_train, index, i)
        jax.block_until_ready(loss_sum)
        seconds = time.perf_counter() - start
        cifar10.emit(
            "epoch",
            epoch=epoch,
            seconds=seconds,
            images=steps * args.batch_size,
            images_per_s=steps * args.batch_size / seconds,
            loss=float(loss_sum) / steps,
        )

    params, _, stats = state
    predict = jax.jit(lambda params, stats, x: forward(params, stats, scale(x), False)[0].argmax(1))
    hits = sum(
        int((np.asarray(predict(params, stats, test.images[i : i + 1000])) == test.labels[i : i + 1000]).sum())
        for i in range(0, len(test.labels), 1000)
    )
    summary = {
        "framework": "jax",
        "framework_version": version,
        "variant": args.variant,
        "parameters": parameters,
        "devices": args.devices,
        "device": args.device,
        "train_images": n,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "synthetic_data": cifar10.is_synthetic(args.data_dir),
    }
    if args.device == "cuda":
        memory = [d.memory_stats() for d in devices]
        if all(m and "peak_bytes_in_use" in m for m in memory):
            summary["allocator_peak_mib"] = {"peak_bytes_in_use": [m["peak_bytes_in_use"] / MIB for m in memory]}
    cifar10.emit("summary", test_accuracy=hits / max(1, len(test.labels)), test_images=len(test.labels), **summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
