"""`dltrain export`: a run folder as one ONNX model, raw columns in, labels and probabilities
(or predictions) out.

The graph holds the whole pipeline that ``dltrain predict`` runs after reading a CSV: the
stored missing-value fills, the one-hot encoding with the training vocabulary, the scaling,
the network with its output activation, and the class labels. docs/export.md is the contract.
Before a file is written, onnxruntime runs it on verification rows made from the stored
schema, and its outputs must equal those of ``dltrain predict`` on the same rows.

graph.py builds an ONNX graph (nodes, constants, the opset each operator needs), knowing nothing
of dltrain; inputs.py turns the raw columns into the model's input (fills, one-hot, scaling, the
rows predict would refuse), network.py the engine's layers and activations, outputs.py the labels,
probabilities or predictions; model.py puts them together into the checked ModelProto;
self_check.py compares it with ``dltrain predict``; command.py writes the file.
"""

from .command import FORMATS, ExportResult, export_run
from .graph import OPERATOR_SINCE, GraphBuilder
from .model import INPUT_FORMS, build_model
from .network import ACTIVATION_EXPORTS, LAYER_EXPORTS, TARGET_INVERSES
from .self_check import ExportMismatch, hostile_rows, onnx_inputs, verification_rows, verify

__all__ = [
    "ACTIVATION_EXPORTS",
    "FORMATS",
    "INPUT_FORMS",
    "LAYER_EXPORTS",
    "OPERATOR_SINCE",
    "TARGET_INVERSES",
    "ExportMismatch",
    "ExportResult",
    "GraphBuilder",
    "build_model",
    "export_run",
    "hostile_rows",
    "onnx_inputs",
    "verification_rows",
    "verify",
]
