"""A loaded run as one checked ONNX ModelProto: what cannot be exported refused by name, the
pieces put together, the opset chosen, the metadata a caller needs to feed it."""

from __future__ import annotations

import json
from pathlib import Path

from ... import __version__
from ...errors import ArtifactError, DltrainError
from .graph import NAME_PREFIX, OPERATOR_SINCE, GraphBuilder, onnx_modules
from .inputs import input_nodes
from .network import ACTIVATION_EXPORTS, LAYER_EXPORTS, TARGET_INVERSES, network_nodes
from .outputs import OUTPUT_NAMES, output_nodes

INPUT_FORMS = ("columns", "features")


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


def _check_exportable(run, input_form: str):
    """Refuse, by name, what the graph cannot hold or the chosen input form cannot take."""
    run_dir, schema = run.run_dir, run.schema
    if input_form not in INPUT_FORMS:
        raise DltrainError(f"--inputs {input_form}: choose {' or '.join(INPUT_FORMS)}")
    outputs = OUTPUT_NAMES[schema.task]
    for column in schema.columns:
        if column.name in outputs or column.name.startswith(NAME_PREFIX):
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


def _opset_imports(onnx, graph: GraphBuilder, opset: int | None) -> list:
    """The opsets the model imports: ``--opset`` (default: the lowest that holds every operator
    used) and the ML domain's; a DltrainError when ``--opset`` is too old or too new."""
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
    return imports + [
        onnx.helper.make_opsetid(domain, version) for domain, version in sorted(required.items()) if domain
    ]


def _metadata(run, input_form: str, output_metadata: dict) -> dict:
    """The model's properties: what a caller needs to feed it and read its outputs (docs/export.md)."""
    schema = run.schema
    return {
        "dltrain_version": __version__,
        "model_sha256": run.manifest["model_sha256"],
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


def build_model(run, input_form: str = "columns", opset: int | None = None):
    """The ONNX ModelProto of a loaded run; a DltrainError names what cannot be exported."""
    onnx, _ = onnx_modules()
    run_dir, schema, manifest = run.run_dir, run.schema, run.manifest
    _check_exportable(run, input_form)
    target_scaling = _target_scaling(run_dir, manifest) if schema.task == "regression" else None
    graph = GraphBuilder(onnx)
    graph_inputs, x, refused, order = input_nodes(graph, schema, input_form)
    x = network_nodes(graph, run.model, x, order)
    graph_outputs, output_metadata = output_nodes(graph, schema, x, refused, target_scaling)
    imports = _opset_imports(onnx, graph, opset)
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
    onnx.helper.set_model_props(model, _metadata(run, input_form, output_metadata))
    onnx.checker.check_model(model, full_check=True)
    return model
