"""The engine's network as ONNX nodes: one entry per activation and per layer type, as they run
at inference, and the inverse of a regression target's scaling."""

from __future__ import annotations

import math

import numpy as np

from ...engine.activations import LeakyReLU
from .graph import GraphBuilder


def _gelu_tanh(graph: GraphBuilder, z: str) -> str:
    """0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), the engine's formula term by term."""
    cube = graph.node("Mul", [graph.node("Mul", [z, z]), z])
    inner = graph.node("Add", [z, graph.node("Mul", [cube, graph.constant("gelu_k", np.float32(0.044715))])])
    inner = graph.node("Mul", [inner, graph.constant("gelu_c", np.float32(0.7978845608028654))])
    one_plus = graph.node("Add", [graph.node("Tanh", [inner]), graph.constant("one", np.float32(1.0))])
    return graph.node("Mul", [graph.node("Mul", [z, graph.constant("half", np.float32(0.5))]), one_plus])


def _gelu_erf(graph: GraphBuilder, z: str) -> str:
    """0.5 z (1 + erf(z / sqrt 2)), the exact form."""
    scaled = graph.node("Div", [z, graph.constant("sqrt2", np.float32(math.sqrt(2.0)))])
    one_plus = graph.node("Add", [graph.node("Erf", [scaled]), graph.constant("one", np.float32(1.0))])
    return graph.node("Mul", [graph.node("Mul", [z, graph.constant("half", np.float32(0.5))]), one_plus])


# One entry per engine activation (activations.ACTIVATIONS); a test checks each against the
# engine's forward. Run folders saved when `gelu` meant the tanh form load it as gelu_tanh.
ACTIVATION_EXPORTS = {
    "linear": lambda graph, z: z,
    "relu": lambda graph, z: graph.node("Relu", [z]),
    "leaky_relu": lambda graph, z: graph.node("LeakyRelu", [z], alpha=LeakyReLU.slope),
    "elu": lambda graph, z: graph.node("Elu", [z], alpha=1.0),
    "gelu": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
    "tanh": lambda graph, z: graph.node("Tanh", [z]),
    "sigmoid": lambda graph, z: graph.node("Sigmoid", [z]),
    "softplus": lambda graph, z: graph.node("Softplus", [z]),
    "softmax": lambda graph, z: graph.node("Softmax", [z], axis=1),
}


def _dense(graph: GraphBuilder, layer, x: str, position: int, order) -> str:
    """x W + b, then the layer's activation; ``order`` (or None) permutes the rows of W."""
    weights = np.asarray(layer.params["W"], dtype=np.float32)
    if order is not None:
        weights = weights[order]
    x = graph.node("MatMul", [x, graph.constant(f"W{position}", weights)])
    x = graph.node("Add", [x, graph.constant(f"b{position}", np.asarray(layer.params["b"], np.float32))])
    return ACTIVATION_EXPORTS[layer.activation.name](graph, x)


# One entry per engine layer type (layers.LAYERS), as it runs at inference; a test checks
# each against the engine's forward. A type without an entry is refused by name.
LAYER_EXPORTS = {
    "dense": _dense,
    "dropout": lambda graph, layer, x, position, order: x,  # the identity at inference
}


def _inverse_standard(graph: GraphBuilder, values: str, statistics: dict) -> str:
    divisor = np.asarray(statistics["divisor"], dtype=np.float32).reshape(1, -1)
    offset = np.asarray(statistics["offset"], dtype=np.float32).reshape(1, -1)
    scaled = graph.node("Mul", [values, graph.constant("target_divisor", divisor)])
    return graph.node("Add", [scaled, graph.constant("target_offset", offset)])


# Regression targets scaled for training are scaled back with the stored statistics
# (values * divisor + offset); "none" means predictions come out as they are.
TARGET_INVERSES = {"none": None, "standard": _inverse_standard}


def network_nodes(graph: GraphBuilder, model, x: str, order: np.ndarray) -> str:
    """The layers as the engine runs them at inference, then the output activation; ``order``
    permutes the rows of the first layer with weights to the graph's input columns."""
    for position, layer in enumerate(model.layers):
        x = LAYER_EXPORTS[layer.kind](graph, layer, x, position, order)
        if layer.params:
            order = None
    return ACTIVATION_EXPORTS[model.output_activation](graph, x)
