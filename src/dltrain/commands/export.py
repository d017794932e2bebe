"""A run folder as one ONNX model: raw columns in, labels and probabilities (or predictions) out.

The graph holds the whole pipeline that ``dltrain predict`` runs after reading a CSV: the
stored missing-value fills, the one-hot encoding with the training vocabulary, the scaling,
the network with its output activation, and the class labels. docs/export.md is the contract.
Before a file is written, onnxruntime runs it on verification rows made from the stored
schema, and its outputs must equal those of ``dltrain predict`` on the same rows.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..api import load
from ..artifacts import CHECKPOINT, LOCK, PENDING_CHECKPOINT, RUN_FILES, RunLock, holds_run
from ..data import BOOLEAN_WORDS, DataSchema
from ..data.csv import numeric_markers
from ..engine.activations import LeakyReLU
from ..errors import ArtifactError, DltrainError, install_hint
from ..files import check_writable, write_output
from .predict import predict_rows

FORMATS = ("onnx",)
INPUT_FORMS = ("columns", "features")
OUTPUT_NAMES = {"classification": ("label", "probabilities"), "regression": ("prediction",)}
ML_DOMAIN = "ai.onnx.ml"
PROBABILITY_TOLERANCE = 1e-5  # absolute, on probabilities in [0, 1]
VALUE_TOLERANCE = 1e-5  # relative (and absolute near zero), on regression predictions
_NAME_PREFIX = "dltrain/"  # internal tensor names; a CSV column named like this is refused

# The first opset (per domain) in which each operator exists with the inputs, attributes and
# element types used here; the model's opset is the largest entry among the operators it uses.
OPERATOR_SINCE = {
    ("", "Add"): 7,
    ("", "Sub"): 7,
    ("", "Mul"): 7,
    ("", "Div"): 7,
    ("", "MatMul"): 1,
    ("", "Concat"): 4,
    ("", "Cast"): 6,
    ("", "Reshape"): 5,
    ("", "Gather"): 1,
    ("", "ArgMax"): 1,
    ("", "Where"): 9,
    ("", "IsNaN"): 9,
    ("", "Not"): 1,
    ("", "Or"): 7,
    ("", "And"): 7,
    ("", "Abs"): 6,
    ("", "Greater"): 7,
    ("", "Less"): 9,  # 9: int64 operands
    ("", "Equal"): 7,  # 7: int64 operands (floats only from 11)
    ("", "Relu"): 6,
    ("", "LeakyRelu"): 6,
    ("", "Elu"): 6,
    ("", "Tanh"): 6,
    ("", "Sigmoid"): 6,
    ("", "Softplus"): 1,
    ("", "Softmax"): 1,
    ("", "Erf"): 9,
    ("", "Identity"): 1,
    ("", "Transpose"): 1,
    (ML_DOMAIN, "LabelEncoder"): 2,  # 2: keys_strings / values_int64s
}


class ExportMismatch(DltrainError):
    """The exported graph disagrees with ``dltrain predict``; nothing is written (exit code 1)."""

    exit_code = 1


def _onnx_modules():
    """(onnx, onnxruntime), or one message with the pip command when the extra is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise DltrainError(
            f"dltrain export needs the onnx extra ({error.name} is not installed); "
            f"install it with: {install_hint('onnx')}"
        ) from None
    return onnx, onnxruntime


class GraphBuilder:
    """Nodes, constants and the operators they use, named uniquely; knows nothing of dltrain."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self.operators: set = set()
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{_NAME_PREFIX}{hint}_{self._count}"

    def constant(self, hint: str, array) -> str:
        name = self.name(hint)
        array = np.asarray(array)
        if array.dtype.kind in "UO":
            tensor = self.onnx.helper.make_tensor(
                name,
                self.onnx.TensorProto.STRING,
                array.shape,
                [str(value).encode("utf-8") for value in array.reshape(-1)],
            )
        else:
            tensor = self.onnx.numpy_helper.from_array(array, name)
        self.initializers.append(tensor)
        return name

    def node(self, op: str, inputs: list, output: str | None = None, domain: str = "", **attributes) -> str:
        if (domain, op) not in OPERATOR_SINCE:
            raise KeyError(f"operator {op} has no OPERATOR_SINCE entry")
        output = output or self.name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], domain=domain, **attributes))
        self.operators.add((domain, op))
        return output

    def required_opsets(self) -> dict:
        """{domain: lowest opset holding every operator used}."""
        needed = {"": 1}
        for domain, op in self.operators:
            needed[domain] = max(needed.get(domain, 1), OPERATOR_SINCE[(domain, op)])
        return needed


# ---------------------------------------------------------------- the network's pieces


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


# ---------------------------------------------------------------- what is exported


@dataclass
class ExportResult:
    path: Path
    opset: int
    input_form: str
    inputs: list
    outputs: list
    verified_rows: int
    model_bytes: int


def _unsupported(run_dir: Path, what: str) -> DltrainError:
    return DltrainError(f"{run_dir}: {what} cannot be expressed in ONNX by this dltrain version; nothing was written")


def _target_scaling(run_dir: Path, manifest: dict):
    """(method, statistics) of a regression target's scaling, or None when targets are not scaled."""
    data = manifest.get("data", {})
    scaler = data.get("target_scaler")
    configured = (manifest.get("config", {}).get("data", {}) or {}).get("target_scale", "none")
    if scaler is None:
        if configured not in (None, "none"):
            raise _unsupported(run_dir, f"data.target_scale: {configured} (no target statistics found in model.json)")
        return None
    method = scaler.get("method", "standard") if isinstance(scaler, dict) else None
    if method not in TARGET_INVERSES:
        raise _unsupported(run_dir, f"the target scaling {method!r}")
    return None if TARGET_INVERSES[method] is None else (method, scaler)


def _integer_labels(labels: list[str]) -> bool:
    return all(re.fullmatch(r"-?\d+", label) for label in labels) and all(abs(int(v)) < 2**62 for v in labels)


def _invalid_label(labels: list[str]):
    """The label of a row the model cannot predict: '' for text labels, an integer no class has."""
    if not _integer_labels(labels):
        return ""
    values = [int(label) for label in labels]
    return -1 if -1 not in values else min(values) - 1


def _check_exportable(run, input_form: str):
    """Refuse, by name, what the graph cannot hold or the chosen input form cannot take."""
    run_dir, schema = run.run_dir, run.schema
    if input_form not in INPUT_FORMS:
        raise DltrainError(f"--inputs {input_form}: choose {' or '.join(INPUT_FORMS)}")
    outputs = OUTPUT_NAMES[schema.task]
    for column in schema.columns:
        if column.name in outputs or column.name.startswith(_NAME_PREFIX):
            raise _unsupported(
                run_dir,
                f"feature column {column.name!r} (the name of an output or of an internal "
                "tensor); rename the column and train again",
            )
        if column.type == "date":  # the graph has no date parsing: say what to do instead (docs/data.md)
            raise DltrainError(
                f"{run_dir}: column {column.name!r} is a date column, which ONNX export does not take (the "
                f"graph has no date parsing); nothing was written. To export, write its numbers "
                f"({', '.join(column.parts)}) as columns of the CSV and train on those, or exclude it"
            )
        if column.type not in ("numeric", "boolean", "categorical"):
            raise _unsupported(run_dir, f"column {column.name!r} of type {column.type!r}")
        if column.type == "categorical" and column.fill is not None and str(column.fill) not in column.categories:
            raise ArtifactError(
                f"{run_dir / 'model.json'}: column {column.name!r} fills empty cells with "
                f"{column.fill!r}, which is not among its categories; the file was changed, "
                "train again"
            )
    if input_form == "features":
        text = [column.name for column in schema.columns if column.type == "categorical"]
        if text:
            raise DltrainError(
                f"--inputs features: the model has categorical columns ({', '.join(text)}), which "
                "need string inputs; use --inputs columns"
            )
    if schema.scale not in ("standard", "minmax", "none"):
        raise _unsupported(run_dir, f"the feature scaling {schema.scale!r}")
    for position, layer in enumerate(run.model.layers):
        activation = getattr(layer, "activation", None)  # Dense layers apply their own activation
        if activation is not None and activation.name not in ACTIVATION_EXPORTS:
            raise _unsupported(run_dir, f"the activation {activation.name!r}")
        if layer.kind not in LAYER_EXPORTS:
            raise _unsupported(run_dir, f"the layer {layer.kind!r} (layer {position})")
    if run.model.output_activation not in ACTIVATION_EXPORTS:
        raise _unsupported(run_dir, f"the output activation {run.model.output_activation!r}")


def _boolean_check(graph: GraphBuilder, block: str, is_boolean: np.ndarray) -> str:
    """|b (b - 1)| for the boolean columns b of ``block`` (0 elsewhere): positive for a boolean
    input other than 0 and 1. The booleans are picked out (b = x * mask) before squaring, so a
    numeric 1e20 beside them is 0 here, never an overflow to inf times 0, which is NaN."""
    booleans = graph.node("Mul", [block, graph.constant("boolean_mask", is_boolean)])
    off_one = graph.node("Mul", [booleans, graph.node("Sub", [booleans, graph.constant("one", np.float32(1.0))])])
    return graph.node("Abs", [off_one])


def _missing_cells(schema: DataSchema, name: str, categories: list) -> list:
    """The string inputs that mean a missing cell in column ``name``: "" and the tokens predict
    reads as missing there (NA, N/A, null, None, ..., and data.na_values), never a category."""
    return [token for token in dict.fromkeys(["", *schema.missing_tokens(name)]) if token not in categories]


def _markers_as_missing(graph: GraphBuilder, block: str, schema: DataSchema, float_columns: list) -> str:
    """NaN where a numeric input equals a marker that is a number (``data.na_values: ["-999"]``):
    predict reads such a cell as missing whatever its spelling (-999, -999.0), so the graph does.
    Equality as not (x < m or x > m), which opset 9 has for floats."""
    columns_of: dict = {}  # marker -> [1, F] mask of the columns it is a marker in
    for position, (_, column) in enumerate(float_columns):
        if column.type == "numeric":
            for marker in numeric_markers(schema.missing_tokens(column.name)):
                mask = columns_of.setdefault(np.float32(marker), np.zeros((1, len(float_columns)), dtype=bool))
                mask[0, position] = True
    for marker, mask in columns_of.items():
        value = graph.constant("marker", np.float32(marker))
        apart = graph.node("Or", [graph.node("Less", [block, value]), graph.node("Greater", [block, value])])
        hit = graph.node("And", [graph.node("Not", [apart]), graph.constant("marker_columns", mask)])
        block = graph.node("Where", [hit, graph.constant("nan", np.float32(np.nan)), block])
    return block


def _overflowed(graph: GraphBuilder, outputs: str, width: int) -> str:
    """[N, 1] true for a row with an output that is inf or NaN (x - x summed over the row is NaN)."""
    ones = graph.constant("ones", np.ones((width, 1), dtype=np.float32))
    return graph.node("IsNaN", [graph.node("MatMul", [graph.node("Sub", [outputs, outputs]), ones])])


def _model_input(graph: GraphBuilder, schema: DataSchema, input_form: str):
    """(graph inputs, model input tensor, row-refused flag [N, 1], order of the model inputs).

    Numeric and boolean columns become one float block, categorical ones one-hot blocks;
    ``order`` maps the block's columns to the stored input positions, and the first dense
    layer's rows are permuted to match, so no column is moved inside the graph."""
    onnx = graph.onnx
    float_type, string_type = onnx.TensorProto.FLOAT, onnx.TensorProto.STRING
    inputs = {}
    float_columns = [(index, column) for index, column in enumerate(schema.columns) if column.type != "categorical"]
    starts = np.cumsum([0] + [column.width for column in schema.columns])
    order, blocks, bad = [], [], []
    if float_columns:
        if input_form == "features":
            inputs["features"] = onnx.helper.make_tensor_value_info("features", float_type, ["N", len(float_columns)])
            block = "features"
        else:
            names = [column.name for _, column in float_columns]
            for name in names:
                inputs[name] = onnx.helper.make_tensor_value_info(name, float_type, ["N", 1])
            if len(names) > 1:
                # Stacked end to end and transposed: one copy per column, where a Concat
                # along axis 1 of [N, 1] tensors moves one number at a time.
                stacked = graph.node("Concat", names, axis=0)
                shape = graph.constant("shape", np.array([len(names), -1], dtype=np.int64))
                block = graph.node("Transpose", [graph.node("Reshape", [stacked, shape])], perm=[1, 0])
            else:
                block = names[0]
        block = _markers_as_missing(graph, block, schema, float_columns)
        fills = np.array(
            [np.nan if column.fill is None else float(column.fill) for _, column in float_columns], dtype=np.float32
        ).reshape(1, -1)
        if not np.all(np.isnan(fills)):
            block = graph.node("Where", [graph.node("IsNaN", [block]), graph.constant("fills", fills), block])
        # A cell predict would refuse (missing without a fill, inf, a boolean other than 0/1)
        # makes its row's sum of checks NaN or positive: x - x is NaN exactly for NaN and inf.
        check = graph.node("Sub", [block, block])
        is_boolean = np.array([column.type == "boolean" for _, column in float_columns], dtype=np.float32)
        if is_boolean.any():
            check = graph.node("Add", [check, _boolean_check(graph, block, is_boolean.reshape(1, -1))])
        ones = graph.constant("ones", np.ones((len(float_columns), 1), dtype=np.float32))
        row_check = graph.node("MatMul", [check, ones])
        positive = graph.node("Greater", [row_check, graph.constant("zero", np.float32(0.0))])
        bad.append(graph.node("Or", [graph.node("IsNaN", [row_check]), positive]))
        blocks.append(block)
        order.extend(int(starts[index]) for index, _ in float_columns)
    for index, column in enumerate(schema.columns):
        if column.type != "categorical":
            continue
        inputs[column.name] = onnx.helper.make_tensor_value_info(column.name, string_type, ["N", 1])
        categories = list(column.categories)
        # "" and every missing-value token (NA, N/A, null, None, ..., data.na_values: as predict
        # reads them) are a missing cell: the fill's category, else a row predict refuses (-2);
        # an unseen value is all zeros under unknown: ignore (-1), else refused as well (-2).
        missing_code = categories.index(str(column.fill)) if column.fill is not None else -2
        missing = _missing_cells(schema, column.name, categories)
        codes = graph.node(
            "LabelEncoder",
            [column.name],
            domain=ML_DOMAIN,
            keys_strings=categories + missing,
            values_int64s=list(range(len(categories))) + [missing_code] * len(missing),
            default_int64=-1 if column.unknown == "ignore" else -2,
        )
        positions = graph.constant("categories", np.arange(len(categories), dtype=np.int64).reshape(1, -1))
        blocks.append(graph.node("Cast", [graph.node("Equal", [codes, positions])], to=float_type))
        bad.append(graph.node("Less", [codes, graph.constant("minus_one", np.array(-1, dtype=np.int64))]))
        order.extend(range(int(starts[index]), int(starts[index + 1])))
    x = graph.node("Concat", blocks, axis=1) if len(blocks) > 1 else blocks[0]
    order = np.asarray(order)
    if not (np.all(schema.offset == 0) and np.all(schema.divisor == 1)):
        x = graph.node("Sub", [x, graph.constant("offset", schema.offset[order].reshape(1, -1))])
        x = graph.node("Div", [x, graph.constant("divisor", schema.divisor[order].reshape(1, -1))])
    refused = bad[0]
    for flag in bad[1:]:
        refused = graph.node("Or", [refused, flag])
    graph_inputs = [inputs["features"]] if input_form == "features" else [inputs[name] for name in schema.feature_names]
    return graph_inputs, x, refused, order


def _network(graph: GraphBuilder, model, x: str, order: np.ndarray) -> str:
    """The layers as the engine runs them at inference, then the output activation; ``order``
    permutes the rows of the first layer with weights to the graph's input columns."""
    for position, layer in enumerate(model.layers):
        x = LAYER_EXPORTS[layer.kind](graph, layer, x, position, order)
        if layer.params:
            order = None
    return ACTIVATION_EXPORTS[model.output_activation](graph, x)


def _outputs(graph: GraphBuilder, schema: DataSchema, x: str, refused: str, target_scaling) -> tuple[list, dict]:
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
    sentinel = _invalid_label(labels)
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


def build_model(run, input_form: str = "columns", opset: int | None = None):
    """The ONNX ModelProto of a loaded run; a DltrainError names what cannot be exported."""
    onnx, _ = _onnx_modules()
    run_dir, schema, manifest = run.run_dir, run.schema, run.manifest
    _check_exportable(run, input_form)
    target_scaling = _target_scaling(run_dir, manifest) if schema.task == "regression" else None
    graph = GraphBuilder(onnx)
    graph_inputs, x, refused, order = _model_input(graph, schema, input_form)
    x = _network(graph, run.model, x, order)
    graph_outputs, output_metadata = _outputs(graph, schema, x, refused, target_scaling)

    required = graph.required_opsets()
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        opset = required[""]
    elif opset < required[""]:
        needing = sorted(op for domain, op in graph.operators if domain == "" and OPERATOR_SINCE[(domain, op)] > opset)
        raise DltrainError(
            f"--opset {opset}: this model needs opset {required['']} or later (for "
            f"{', '.join(needing)}); give --opset {required['']} or leave --opset out"
        )
    if opset > newest:
        raise DltrainError(
            f"--opset {opset}: the installed onnx {onnx.__version__} knows opsets up to {newest}; "
            f"give --opset {newest} or lower, or upgrade onnx"
        )
    imports = [onnx.helper.make_opsetid("", opset)]
    imports += [onnx.helper.make_opsetid(domain, version) for domain, version in sorted(required.items()) if domain]
    outputs = " and ".join(output.name for output in graph_outputs)
    body = onnx.helper.make_graph(
        graph.nodes,
        f"dltrain {manifest['config'].get('name', run_dir.name)}",
        graph_inputs,
        graph_outputs,
        graph.initializers,
    )
    model = onnx.helper.make_model(
        body,
        opset_imports=imports,
        producer_name="dltrain",
        producer_version=__version__,
        doc_string=f"dltrain run {run_dir.name}: raw CSV columns in, {outputs} out; see docs/export.md",
    )
    model.ir_version = onnx.helper.find_min_ir_version_for(list(imports))
    metadata = {
        "dltrain_version": __version__,
        "model_sha256": manifest["model_sha256"],
        "task": schema.task,
        "input_form": input_form,
        "feature_names": json.dumps(schema.feature_names),
        "feature_kinds": json.dumps([column.type for column in schema.columns]),
        "class_labels": json.dumps(schema.class_labels),
        "target_names": json.dumps(schema.targets),
        # Cells (stripped) that predict reads as missing: in every column, and per column where it has its own.
        "missing_tokens": json.dumps(schema.missing_tokens()),
        "column_missing_tokens": json.dumps({name: schema.missing_tokens(name) for name in schema.column_na_values}),
        "decimal": schema.decimal,
        **output_metadata,
    }
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------- verification

# A number far beyond any training data that still fits float32 once scaled: the graph must
# answer as predict does beside it (its boolean check once overflowed to NaN on 1e20).
HUGE = 1e20
# A number that fits float32 but passes its range once scaled (where training's spread is
# below 1), or makes the network overflow: a row predict refuses.
OVERFLOWING = 3.0e38


def _number_text(value: float, decimal: str) -> str:
    text = repr(float(value))
    return text.replace(".", ",") if decimal == "," else text


def _unseen(categories: list) -> str:
    unseen = "unseen"
    while unseen in categories:
        unseen += "_"
    return unseen


def _missing_spellings(schema: DataSchema, column) -> list:
    """The cells predict reads as missing in ``column``: empty, each token, and for a numeric
    column each marker that is a number in another spelling (-999.0 for "-999")."""
    tokens = ["", *schema.missing_tokens(column.name)]
    if column.type == "numeric":
        tokens += [_number_text(marker, schema.decimal) for marker in numeric_markers(tokens)]
    return list(dict.fromkeys(tokens))


def verification_rows(schema: DataSchema, seed: int = 0) -> dict:
    """CSV cells that exercise every stored preprocessing step, all of which predict accepts:
    {column: [cell text]}.

    Made from the manifest alone (no training CSV needed): numbers spread over the training
    statistics, every category, true and false for booleans, and, wherever a column has a
    fill, missing cells in staggered rows: empty, then each of its missing-value tokens in turn."""
    columns = schema.columns
    widest = max([len(column.categories) for column in columns if column.type == "categorical"] + [0])
    tokens = {column.name: _missing_spellings(schema, column) for column in columns}
    filled = [len(tokens[column.name]) for column in columns if column.fill is not None and len(columns) > 1]
    n_rows = max(16, widest + 2, 4 * max(filled + [0]))
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0] + [column.width for column in columns])
    cells = {}
    for index, column in enumerate(columns):
        if column.type == "numeric":
            offset, divisor = float(schema.offset[starts[index]]), float(schema.divisor[starts[index]])
            if schema.scale == "none" and isinstance(column.fill, (int, float)):
                offset = float(column.fill)
            spread = rng.normal(0.0, 1.5, n_rows) if schema.scale != "minmax" else rng.uniform(-0.2, 1.2, n_rows)
            numbers = (offset + divisor * spread).astype(np.float32)
            column_cells = [_number_text(value, schema.decimal) for value in numbers]
        elif column.type == "boolean":
            column_cells = [("false", "true")[row % 2] for row in range(n_rows)]
        else:
            categories = list(column.categories)
            column_cells = [categories[(row + index) % len(categories)] for row in range(n_rows)]
            if column.unknown == "ignore":
                column_cells[n_rows - 1] = _unseen(categories)
        # Missing cells in rows staggered by column, so no line is all missing (and a
        # one-column file keeps its cells); each column meets every token.
        if column.fill is not None and len(columns) > 1:
            missing_rows = [row for row in range(n_rows) if (row + index) % 4 == 1]
            for count, row in enumerate(missing_rows):
                column_cells[row] = tokens[column.name][count % len(tokens[column.name])]
        cells[column.name] = column_cells
    return cells


def hostile_rows(schema: DataSchema) -> list[tuple[str, dict]]:
    """Single rows at the edges, each checked alone against predict, which may refuse it: then
    the graph must mark it refused. [(what the row holds, {column: cell text})]"""
    columns = schema.columns
    starts = np.cumsum([0] + [column.width for column in columns])

    def row(numbers: float | None = None, boolean: str = "true", **changed) -> dict:
        cells = {}
        for index, column in enumerate(columns):
            if column.type == "numeric":
                value = float(schema.offset[starts[index]]) if numbers is None else numbers
                cells[column.name] = _number_text(value, schema.decimal)
            elif column.type == "boolean":
                cells[column.name] = boolean
            else:
                cells[column.name] = column.categories[0]
        cells.update(changed)
        return cells

    rows = []
    if any(column.type == "numeric" for column in columns):
        rows.append((f"every number {HUGE:g}", row(HUGE)))
        rows.append((f"every number {-HUGE:g}", row(-HUGE, "false")))
        rows.append((f"every number {OVERFLOWING:g}", row(OVERFLOWING)))
    unfilled = next((column for column in columns if column.fill is None), None)
    if unfilled is not None:
        rows.append((f"{unfilled.name} missing (N/A) without a fill", row(**{unfilled.name: "N/A"})))
    strict = next((column for column in columns if column.type == "categorical" and column.unknown == "error"), None)
    if strict is not None:
        unseen = _unseen(list(strict.categories))
        rows.append((f"{strict.name} unseen under unknown: error", row(**{strict.name: unseen})))
    return rows


def onnx_inputs(schema: DataSchema, cells: dict, input_form: str, decimal: str | None = None) -> dict:
    """The feed for an onnxruntime session of an exported model, from CSV cells (stripped), as
    the README's snippet builds it: a column's missing-value tokens become NaN in float inputs
    (the graph maps them in string inputs itself), boolean words 1.0 and 0.0, ``decimal``
    (default: the model's) the decimal mark."""
    decimal = schema.decimal if decimal is None else decimal

    def number(cell: str, missing: set) -> float:
        if cell in missing:
            return math.nan
        word = BOOLEAN_WORDS.get(cell.lower())
        return float(word) if word is not None else float(cell.replace(decimal, "."))

    columns = {}
    for column in schema.columns:
        values = cells[column.name]
        if column.type == "categorical":
            columns[column.name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            missing = set(schema.missing_tokens(column.name))
            numbers = [number(value, missing) for value in values]
            columns[column.name] = np.array(numbers, dtype=np.float32).reshape(-1, 1)
    if input_form == "features":
        return {"features": np.column_stack([columns[name] for name in schema.feature_names])}
    return columns


def _predict_with_dltrain(run_dir: Path, schema: DataSchema, cells: dict, path: Path):
    """``dltrain predict``'s header and rows for the cells, via a CSV like a user's."""
    delimiter = schema.delimiter or (";" if schema.decimal == "," else ",")
    n_rows = len(next(iter(cells.values())))
    with open(path, "w", encoding=schema.encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(schema.feature_names)
        for row in range(n_rows):
            writer.writerow([cells[name][row] for name in schema.feature_names])
    return predict_rows(run_dir, path, dialect={"delimiter": delimiter, "encoding": schema.encoding})


def _describe_row(schema: DataSchema, cells: dict, row: int) -> str:
    shown = [f"{name}={cells[name][row]!r}" for name in schema.feature_names[:6]]
    return ", ".join(shown) + (" …" if len(schema.feature_names) > 6 else "")


def _difference(schema: DataSchema, outputs: dict, row: int, expected: list | None) -> str | None:
    """How the graph's row differs from predict's (``expected`` None: predict refused it), or None."""
    if expected is None:
        values = outputs["prediction" if schema.task == "regression" else "probabilities"][row]
        label_ok = schema.task == "regression" or str(outputs["label"][row]) == str(_invalid_label(schema.class_labels))
        if np.all(np.isnan(values)) and label_ok:
            return None
        shown = values.tolist() if schema.task == "regression" else [str(outputs["label"][row]), values.tolist()]
        return f"{shown} where dltrain predict refuses the row (the graph must give NaN and the invalid label)"
    if schema.task == "regression":
        want = np.array([float(value) for value in expected])
        got = outputs["prediction"][row].astype(np.float64)
        if not np.allclose(got, want, rtol=VALUE_TOLERANCE, atol=VALUE_TOLERANCE):
            return f"prediction {got.tolist()} against dltrain predict's {want.tolist()}"
        return None
    want = np.array([float(value) for value in expected[1:]])
    got = outputs["probabilities"][row].astype(np.float64)
    label = str(outputs["label"][row])
    if not np.allclose(got, want, rtol=0, atol=PROBABILITY_TOLERANCE):
        return f"probabilities {got.tolist()} against dltrain predict's {want.tolist()}"
    if label != expected[0] and not _near_tie(want):
        return f"label {label!r} against dltrain predict's {expected[0]!r}"
    return None


def verify(run, model_bytes: bytes, input_form: str) -> int:
    """Run the exported graph and ``dltrain predict`` on the verification rows and the hostile
    rows (each alone); ExportMismatch if they differ. Returns the number of rows compared."""
    _, onnxruntime = _onnx_modules()
    schema = run.schema
    cells = verification_rows(schema)
    hostile = hostile_rows(schema)
    n_rows = len(next(iter(cells.values())))
    every = {name: cells[name] + [row[name] for _, row in hostile] for name in schema.feature_names}
    try:
        session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        results = session.run(None, onnx_inputs(schema, every, input_form))
    except Exception as error:  # onnxruntime raises its own exception types for a model it cannot run
        raise DltrainError(
            f"{run.run_dir}: onnxruntime {onnxruntime.__version__} cannot run the exported model "
            f"({str(error).splitlines()[0]}); nothing was written. Give a lower --opset (or none), "
            "or upgrade onnxruntime"
        ) from None
    outputs = dict(zip([output.name for output in session.get_outputs()], results))
    expected: list = []
    with tempfile.TemporaryDirectory(prefix="dltrain-export-") as folder:
        _, rows = _predict_with_dltrain(run.run_dir, schema, cells, Path(folder) / "verification.csv")
        if len(rows) != n_rows:
            raise ExportMismatch(
                f"{run.run_dir}: dltrain predict gave {len(rows)} rows for {n_rows} verification rows; "
                "nothing was written. This is a dltrain bug; please report it"
            )
        expected.extend(rows)
        for position, (_, row) in enumerate(hostile):
            try:
                _, rows = _predict_with_dltrain(
                    run.run_dir, schema, {name: [cell] for name, cell in row.items()}, Path(folder) / f"{position}.csv"
                )
                expected.append(rows[0])
            except DltrainError:
                expected.append(None)  # predict refuses the row
    for row, wanted in enumerate(expected):
        problem = _difference(schema, outputs, row, wanted)
        if problem:
            if load(run.run_dir, device="cpu").manifest["model_sha256"] != run.manifest["model_sha256"]:
                raise ArtifactError(
                    f"{run.run_dir}: the run was replaced while it was being exported (a fit "
                    "--force?); nothing was written; run dltrain export again"
                )
            what = f"row {row}" if row < n_rows else f"row {row} ({hostile[row - n_rows][0]})"
            raise ExportMismatch(
                f"{run.run_dir}: the exported graph disagrees with dltrain predict on verification "
                f"{what} ({_describe_row(schema, every, row)}): {problem}; nothing was written. "
                "This is a dltrain bug; please report it"
            )
    return len(expected)


def _near_tie(probabilities: np.ndarray) -> bool:
    """The two largest probabilities (or p and 0.5) too close for a label to be decided reliably."""
    top = np.sort(probabilities)[-2:]
    return len(top) == 2 and top[1] - top[0] <= 2 * PROBABILITY_TOLERANCE


# ---------------------------------------------------------------- the command


def export_run(
    run_dir, out=None, format: str = "onnx", opset: int | None = None, force: bool = False, input_form: str = "columns"
) -> ExportResult:
    """Export a run folder as one ONNX file, verified against ``dltrain predict`` before it is written."""
    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise DltrainError(f"--format {format}: not supported; choose {', '.join(FORMATS)}")
    _onnx_modules()
    out = Path(out) if out is not None else run_dir / "model.onnx"
    # Into a run folder: under fit's lock, so that a fit cannot swap the run away meanwhile.
    with RunLock(out.parent, command="export") if holds_run(out.parent) else contextlib.nullcontext():
        return _export_run(run_dir, out, opset, force, input_form)


def _export_run(run_dir: Path, out: Path, opset: int | None, force: bool, input_form: str) -> ExportResult:
    run = load(run_dir, device="cpu")  # the graph's weights are NumPy arrays, whatever device trained it
    check_writable(out, make_parents=True)
    if out.name in RUN_FILES + (CHECKPOINT, PENDING_CHECKPOINT, LOCK) and holds_run(out.parent):
        raise ArtifactError(
            f"--out {out} is a file of the run folder {out.parent}; writing there would break "
            "the run. Give another file name, such as model.onnx"
        )
    if out.exists() and not force:
        raise ArtifactError(f"{out}: already exists; pass --force to overwrite it, or choose another --out")
    model = build_model(run, input_form, opset)
    payload = model.SerializeToString()
    verified = verify(run, payload, input_form)
    write_output(out, payload)
    return ExportResult(
        out,
        model.opset_import[0].version,
        input_form,
        [item.name for item in model.graph.input],
        [item.name for item in model.graph.output],
        verified,
        len(payload),
    )
