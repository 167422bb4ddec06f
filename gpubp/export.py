"""ONNX export: the network as an ONNX graph any ONNX runtime can run.

Each layer l becomes one ``Gemm`` node, ``Z = A W^T + b`` (``transB=1``, because gpubp stores W as
(n_out, n_in), the layout ONNX's Gemm reads with transB), then its activation: ``Sigmoid``, ``Tanh``,
``Relu``, ``Softmax`` (axis -1, over each row's outputs) or nothing for "linear". The graph's input
"X" is (N, sizes[0]) and its output "Y" is (N, sizes[-1]), N the batch size (any). Weights are stored
as initializers in the network's dtype (float32 or float64), or in the ``dtype`` asked for.

onnx is an optional dependency: ``pip install "gpubp[onnx]"`` (onnxruntime too, to run the model).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .config import Config, check
from .modelfile import atomic_write
from .state import State

OPSET = 17  # Softmax takes one axis from opset 13; 17 is read by every onnxruntime since 1.12 (2022)
IR_VERSION = 8  # the IR version of opset 17 (onnx 1.12): newer files would shut out older runtimes
ONNX_OPS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "linear": None, "softmax": "Softmax"}


def onnx_model(config: Config, state: State, dtype: str | None = None) -> Any:
    """The network of ``config`` and ``state`` as an ``onnx.ModelProto`` (checked by
    ``onnx.checker``); ``dtype`` defaults to the network's."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "gpubp[onnx]"') from None

    dtype = config.dtype if dtype is None else check("dtype", dtype)
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE
    n_layers, acts = len(config.sizes) - 1, config.layer_activations
    nodes, inits = [], []
    a = "X"
    for l, (W, b) in enumerate(zip(state.weights, state.biases), start=1):
        last = l == n_layers
        op = ONNX_OPS[acts[l - 1]]
        z = "Y" if last and op is None else f"z{l}"
        inits += [numpy_helper.from_array(W.astype(dtype), f"W{l}"), numpy_helper.from_array(b.astype(dtype), f"b{l}")]
        nodes.append(helper.make_node("Gemm", [a, f"W{l}", f"b{l}"], [z], name=f"layer{l}", transB=1))
        if op is None:
            a = z
            continue
        a = "Y" if last else f"a{l}"
        attrs = {"axis": -1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [z], [a], name=f"{acts[l - 1]}{l}", **attrs))
    graph = helper.make_graph(
        nodes,
        "gpubp_mlp",
        [helper.make_tensor_value_info("X", elem, ["N", config.sizes[0]])],
        [helper.make_tensor_value_info("Y", elem, ["N", config.sizes[-1]])],
        initializer=inits,
    )
    from . import __version__

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="gpubp",
        producer_version=__version__,
        doc_string=f"gpubp MLP {','.join(map(str, config.sizes))}: {config.activation} hidden, "
        f"{config.output_activation} output; Y = the output activations a^L of X (rows are samples)",
    )
    model.ir_version = IR_VERSION
    props = dict(config.to_dict(), dtype=dtype, epochs_trained=state.epochs_trained)
    helper.set_model_props(model, {"gpubp": json.dumps(props)})
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(config: Config, state: State, path: str | os.PathLike, dtype: str | None = None) -> None:
    """Write the network to ``path`` as an ONNX model, by the model file's atomic writer."""
    data = onnx_model(config, state, dtype).SerializeToString()  # the whole file, before anything is written
    atomic_write(path, lambda fh: fh.write(data))
