"""The raw CSV columns as the model's input, inside the graph: the stored fills, missing-value
markers, the one-hot encoding with the training vocabulary and the scaling, and a flag for each
row that ``dltrain predict`` would refuse."""

from __future__ import annotations

import numpy as np

from ...data import DataSchema
from ...data.cells import numeric_markers
from .graph import ML_DOMAIN, GraphBuilder


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


def _float_input(graph: GraphBuilder, inputs: dict, float_columns: list, input_form: str) -> str:
    """The numeric and boolean columns as one [N, F] tensor: the ``features`` input, or one
    [N, 1] input per column put side by side; ``inputs`` gains the graph inputs made."""
    float_type = graph.onnx.TensorProto.FLOAT
    if input_form == "features":
        inputs["features"] = graph.onnx.helper.make_tensor_value_info("features", float_type, ["N", len(float_columns)])
        return "features"
    names = [column.name for _, column in float_columns]
    for name in names:
        inputs[name] = graph.onnx.helper.make_tensor_value_info(name, float_type, ["N", 1])
    if len(names) == 1:
        return names[0]
    # Stacked end to end and transposed: one copy per column, where a Concat
    # along axis 1 of [N, 1] tensors moves one number at a time.
    stacked = graph.node("Concat", names, axis=0)
    shape = graph.constant("shape", np.array([len(names), -1], dtype=np.int64))
    return graph.node("Transpose", [graph.node("Reshape", [stacked, shape])], perm=[1, 0])


def _float_block(graph: GraphBuilder, schema: DataSchema, block: str, float_columns: list) -> tuple[str, str]:
    """(the block with its markers missing and its fills in, [N, 1] true for a row predict refuses)."""
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
    return block, graph.node("Or", [graph.node("IsNaN", [row_check]), positive])


def _one_hot_block(graph: GraphBuilder, schema: DataSchema, column) -> tuple[str, str]:
    """(a categorical column's one-hot block, [N, 1] true for a row predict refuses)."""
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
    block = graph.node("Cast", [graph.node("Equal", [codes, positions])], to=graph.onnx.TensorProto.FLOAT)
    return block, graph.node("Less", [codes, graph.constant("minus_one", np.array(-1, dtype=np.int64))])


def input_nodes(graph: GraphBuilder, schema: DataSchema, input_form: str):
    """(graph inputs, model input tensor, row-refused flag [N, 1], order of the model inputs).

    Numeric and boolean columns become one float block, categorical ones one-hot blocks;
    ``order`` maps the block's columns to the stored input positions, and the first dense
    layer's rows are permuted to match, so no column is moved inside the graph."""
    inputs: dict = {}
    float_columns = [(index, column) for index, column in enumerate(schema.columns) if column.type != "categorical"]
    starts = np.cumsum([0] + [column.width for column in schema.columns])
    order, blocks, bad = [], [], []
    if float_columns:
        block, refused = _float_block(
            graph, schema, _float_input(graph, inputs, float_columns, input_form), float_columns
        )
        blocks.append(block)
        bad.append(refused)
        order.extend(int(starts[index]) for index, _ in float_columns)
    for index, column in enumerate(schema.columns):
        if column.type != "categorical":
            continue
        inputs[column.name] = graph.onnx.helper.make_tensor_value_info(
            column.name, graph.onnx.TensorProto.STRING, ["N", 1]
        )
        block, refused = _one_hot_block(graph, schema, column)
        blocks.append(block)
        bad.append(refused)
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
