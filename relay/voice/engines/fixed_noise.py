"""Random draws inside an ONNX voice model replaced by a fixed noise sequence.

VITS voices (Piper) draw Gaussian noise for the duration predictor and the
prior at every call, and ONNX Runtime's ``RandomNormalLike`` keeps one
generator per session, so the same phrase came out different each time
(lengths too). A listener hearing a bundle twice, a cache of rendered audio,
and a test of intelligibility all want the same text to give the same sound.
The noise itself matters (without it VITS speech goes flat), so each random
node is replaced by a slice of one fixed standard-normal sequence, tiled when
a draw is longer: the same distribution, drawn the same way every time.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# A prime length, so a tiled sequence does not line up with the channel axes.
NOISE_LENGTH = 1_048_573
SEED = 20240917


def fixed_noise(model: onnx.ModelProto, seed: int = SEED) -> int:
    """Replace every ``RandomNormalLike`` node in ``model`` (in place) by a
    slice of a fixed noise sequence of the input's shape; returns how many."""
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type == "RandomNormalLike" and n.domain in ("", "ai.onnx")]
    if not nodes:
        return 0
    noise = np.random.default_rng(seed).standard_normal(NOISE_LENGTH).astype(np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(noise, "fixed_noise/sequence"),
            numpy_helper.from_array(np.array([NOISE_LENGTH - 1], np.int64), "fixed_noise/length_less_one"),
            numpy_helper.from_array(np.array([NOISE_LENGTH], np.int64), "fixed_noise/length"),
            numpy_helper.from_array(np.array([1], np.int64), "fixed_noise/one_dim"),
            numpy_helper.from_array(np.array([0], np.int64), "fixed_noise/zero"),
        ]
    )
    for i, node in enumerate(nodes):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("dtype", 1) != onnx.TensorProto.FLOAT:
            raise ValueError(f"{node.name}: only float noise can be fixed")
        p = f"fixed_noise/{i}/"
        x, out = node.input[0], node.output[0]
        replacement = [
            helper.make_node("Size", [x], [p + "size"]),
            helper.make_node("Reshape", [p + "size", "fixed_noise/one_dim"], [p + "count"]),
            helper.make_node("Add", [p + "count", "fixed_noise/length_less_one"], [p + "padded"]),
            helper.make_node("Div", [p + "padded", "fixed_noise/length"], [p + "repeats"]),
            helper.make_node("Tile", ["fixed_noise/sequence", p + "repeats"], [p + "tiled"]),
            helper.make_node("Slice", [p + "tiled", "fixed_noise/zero", p + "count"], [p + "flat"]),
            helper.make_node("Shape", [x], [p + "shape"]),
        ]
        mean, scale = float(attrs.get("mean", 0.0)), float(attrs.get("scale", 1.0))
        shaped = out if (mean, scale) == (0.0, 1.0) else p + "shaped"
        replacement.append(helper.make_node("Reshape", [p + "flat", p + "shape"], [shaped]))
        if shaped != out:
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(scale, np.float32), p + "scale"),
                    numpy_helper.from_array(np.array(mean, np.float32), p + "mean"),
                ]
            )
            replacement += [
                helper.make_node("Mul", [shaped, p + "scale"], [p + "scaled"]),
                helper.make_node("Add", [p + "scaled", p + "mean"], [out]),
            ]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for j, new in enumerate(replacement):
            graph.node.insert(at + j, new)
    return len(nodes)
