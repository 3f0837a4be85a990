"""Random draws in ONNX voice models made repeatable (relay.voice.engines.fixed_noise)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

from relay.voice.engines.fixed_noise import NOISE_LENGTH, fixed_noise


def _noisy_model(mean: float, scale: float) -> onnx.ModelProto:
    """x -> x + RandomNormalLike(x): the shape of a VITS prior draw."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, None])
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["noise"], dtype=TensorProto.FLOAT, mean=mean, scale=scale),
        helper.make_node("Add", ["x", "noise"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "noisy", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def _runs(model: onnx.ModelProto, x: np.ndarray, times: int = 2) -> list[np.ndarray]:
    """Several calls in one session, as a loaded voice is called phrase after phrase."""
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, {"x": x})[0] for _ in range(times)]


def test_the_same_input_draws_the_same_noise_with_the_same_statistics():
    x = np.zeros((1, 192, 400), np.float32)
    random = _noisy_model(0.5, 2.0)
    assert not np.array_equal(*_runs(random, x))  # the draw this replaces: the next call differs
    model = _noisy_model(0.5, 2.0)
    assert fixed_noise(model) == 1
    onnx.checker.check_model(model)
    first, again = _runs(model, x)
    assert first.shape == x.shape and np.array_equal(first, again)
    assert abs(first.mean() - 0.5) < 0.05 and abs(first.std() - 2.0) < 0.05
    rows = first[0]  # channels are not copies of one another
    assert abs(np.corrcoef(rows[0], rows[1])[0, 1]) < 0.2


def test_a_draw_longer_than_the_sequence_is_tiled():
    model = _noisy_model(0.0, 1.0)
    fixed_noise(model)
    x = np.zeros((1, 2, NOISE_LENGTH + 10), np.float32)  # twice the sequence and a little more
    (out,) = _runs(model, x, 1)
    assert out.shape == x.shape
    flat = out.ravel()
    assert np.array_equal(flat[NOISE_LENGTH:], flat[: flat.size - NOISE_LENGTH])  # the sequence again
    assert abs(flat.std() - 1.0) < 0.01


def test_a_model_without_random_draws_is_untouched():
    model = _noisy_model(0.0, 1.0)
    del model.graph.node[0]
    model.graph.node[0].input[1] = "x"
    before = model.SerializeToString()
    assert fixed_noise(model) == 0
    assert model.SerializeToString() == before
