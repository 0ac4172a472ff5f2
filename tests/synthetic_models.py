"""Large synthetic ML programs for memory tests, built without holding their weights.

Each weight is a broadcast view of one random row (distinct per layer, so coremltools'
const deduplication keeps them apart): the builder holds a few KB per layer, and
coremltools serialises one weight at a time.
"""

import numpy as np


def unet_like_blocks(total_bytes, width=640):
    """Layer shapes of a UNet-like mix (3x3 convs, attention projections, GEGLU feed-forward)
    repeated until about `total_bytes` of fp16 weights."""
    block = [("conv", (width, width, 3, 3)), ("conv", (width, width, 3, 3)),
             ("linear", (width, width)), ("linear", (width, width)), ("linear", (width, width)),
             ("linear", (width, width)), ("linear", (8 * width, width)), ("linear", (width, 4 * width))]
    per_block = sum(2 * int(np.prod(s)) for _, s in block)
    blocks = max(1, int(round(total_bytes / per_block)))
    return [layer for _ in range(blocks) for layer in block]


def big_model(path, total_bytes, target=None, seed=0):
    """Saves an fp16 ML program with about `total_bytes` of weights at `path`."""
    import coremltools as ct
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    target = target or ct.target.iOS18
    rng = np.random.default_rng(seed)
    layers = unet_like_blocks(total_bytes)
    width = layers[0][1][1]

    def weight(shape):
        row = (rng.standard_normal((1,) + shape[1:]) * 0.05).astype(np.float16)
        return np.broadcast_to(row, shape)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, width, 4, 4), dtype=types.fp16)], opset_version=target)
    def prog(x):
        y = x
        for i, (kind, shape) in enumerate(layers):
            if kind == "conv":
                y = mb.conv(x=y, weight=weight(shape), pad_type="same", name=f"conv_{i}")
                continue
            flat = mb.reshape(x=y, shape=[1, width * 16], name=f"flat_{i}")
            pooled = mb.slice_by_size(x=flat, begin=[0, 0], size=[1, shape[1]], name=f"take_{i}")
            z = mb.linear(x=pooled, weight=weight(shape), name=f"linear_{i}")
            z = mb.slice_by_size(x=z, begin=[0, 0], size=[1, width], name=f"cut_{i}")
            y = mb.add(x=y, y=mb.reshape(x=z, shape=[1, width, 1, 1], name=f"back_{i}"), name=f"res_{i}")
        return y

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT16)
    model.save(path)
    return sum(int(np.prod(s)) for _, s in layers)
