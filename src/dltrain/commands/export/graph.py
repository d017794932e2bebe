"""An ONNX graph under construction: nodes and constants named uniquely, and the lowest opset
that holds every operator used. Knows nothing of dltrain."""

from __future__ import annotations

import numpy as np

from ...errors import DltrainError, install_hint

ML_DOMAIN = "ai.onnx.ml"
NAME_PREFIX = "dltrain/"  # internal tensor names; a CSV column named like this is refused

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


def onnx_modules():
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
        return f"{NAME_PREFIX}{hint}_{self._count}"

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
