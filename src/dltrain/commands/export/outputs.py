"""The graph's outputs: label and probabilities (classification) or prediction (regression), with
NaN and an invalid label for a row ``dltrain predict`` refuses."""

from __future__ import annotations

import json
import re

import numpy as np

from ...data import DataSchema
from .graph import GraphBuilder
from .network import TARGET_INVERSES

OUTPUT_NAMES = {"classification": ("label", "probabilities"), "regression": ("prediction",)}


def _integer_labels(labels: list[str]) -> bool:
    return all(re.fullmatch(r"-?\d+", label) for label in labels) and all(abs(int(v)) < 2**62 for v in labels)


def invalid_label(labels: list[str]):
    """The label of a row the model cannot predict: '' for text labels, an integer no class has."""
    if not _integer_labels(labels):
        return ""
    values = [int(label) for label in labels]
    return -1 if -1 not in values else min(values) - 1


def _overflowed(graph: GraphBuilder, outputs: str, width: int) -> str:
    """[N, 1] true for a row with an output that is inf or NaN (x - x summed over the row is NaN)."""
    ones = graph.constant("ones", np.ones((width, 1), dtype=np.float32))
    return graph.node("IsNaN", [graph.node("MatMul", [graph.node("Sub", [outputs, outputs]), ones])])


def output_nodes(graph: GraphBuilder, schema: DataSchema, x: str, refused: str, target_scaling) -> tuple[list, dict]:
    """label and probabilities, or prediction, with NaN (and the invalid label) for refused rows."""
    onnx = graph.onnx
    float_type = onnx.TensorProto.FLOAT
    if schema.task == "regression" and target_scaling is not None:
        x = TARGET_INVERSES[target_scaling[0]](graph, x, target_scaling[1])
    # predict refuses a row whose outputs overflowed inside the network (inf or NaN): so does the graph.
    refused = graph.node("Or", [refused, _overflowed(graph, x, schema.n_outputs)])
    # NaN for a row predict would refuse, else 0: added to the outputs, cheaper than a Where on them.
    nan_or_zero = graph.node(
        "Where", [refused, graph.constant("nan", np.float32(np.nan)), graph.constant("zero", np.float32(0.0))]
    )
    if schema.task == "regression":
        graph.node("Add", [x, nan_or_zero], output="prediction")
        return [onnx.helper.make_tensor_value_info("prediction", float_type, ["N", len(schema.targets)])], {}
    labels = schema.class_labels
    integer = _integer_labels(labels)
    sentinel = invalid_label(labels)
    label_values = (
        np.array([int(label) for label in labels], dtype=np.int64) if integer else np.array(labels, dtype=object)
    )
    if schema.binary:
        # predict's rule: class 1 when p >= 0.5; probabilities are (1 - p, p).
        below = graph.node("Less", [x, graph.constant("half", np.float32(0.5))])
        index = graph.node("Cast", [graph.node("Not", [below])], to=onnx.TensorProto.INT64)
        one_minus = graph.node("Sub", [graph.constant("one", np.float32(1.0)), x])
        probabilities = graph.node("Concat", [one_minus, x], axis=1)
    else:
        index = graph.node("ArgMax", [x], axis=1, keepdims=1)
        probabilities = x
    flat = graph.constant("flat", np.array([-1], dtype=np.int64))
    label = graph.node(
        "Gather", [graph.constant("class_labels", label_values), graph.node("Reshape", [index, flat])], axis=0
    )
    sentinel_value = np.array(sentinel, dtype=np.int64) if integer else np.array(sentinel, dtype=object)
    graph.node(
        "Where",
        [graph.node("Reshape", [refused, flat]), graph.constant("invalid_label", sentinel_value), label],
        output="label",
    )
    graph.node("Add", [probabilities, nan_or_zero], output="probabilities")
    label_type = onnx.TensorProto.INT64 if integer else onnx.TensorProto.STRING
    outputs = [
        onnx.helper.make_tensor_value_info("label", label_type, ["N"]),
        onnx.helper.make_tensor_value_info("probabilities", float_type, ["N", len(labels)]),
    ]
    return outputs, {"label_type": "int64" if integer else "string", "invalid_label": json.dumps(sentinel)}
