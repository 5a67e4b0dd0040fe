"""Read an ONNX file into a :class:`~playground.model.graph.Model`: checked, sorted, shaped.

Reading is defensive, since a file may come from anyone: its size is capped before it is
parsed; a file that does not parse, has no graph, an old opset, more than :data:`MAX_NODES`
nodes, an initializer that declares more data than it holds (a "2 GB" tensor in a 1 KB file),
a tensor nobody writes, or a cycle is refused with one line (:class:`ModelError`). Weights are
never read (chains use generated inputs): only their shapes, and the few scalars a Clip needs.
Weights may be initializers, external data, or graph inputs declared with a shape and no data
(the small examples in :mod:`playground.model.examples` are written that way).

The data path is what remains once weights and constants are set aside: a node whose inputs
are all constant (a Constant, a Reshape of an initializer) is constant too, an Identity is an
alias. Shapes come from ``onnx.shape_inference`` on the sorted graph, after the input's
dynamic dims (if any) are fixed from ``input_shape``; without it a dynamic input is refused
with a request for its shape. Each data-path node is then mapped to chain layers by
:mod:`playground.model.layers`.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

from playground.model.graph import PARAM_SLOTS, Model, ModelError, Node

#: Largest file read by default (bytes); the page passes its own, smaller cap.
MAX_BYTES = 256 << 20
#: Most nodes in a graph: far above any convolutional network, far below what exhausts memory.
MAX_NODES = 100_000
MIN_OPSET = 7
def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return ""


def read_bytes(source: bytes | str | Path, max_bytes: int = MAX_BYTES) -> tuple[bytes, str]:
    """The file's bytes and a name for it; refuses a file over ``max_bytes`` before reading."""
    if isinstance(source, bytes | bytearray | memoryview):
        data, name = bytes(source), "model"
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"{path}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ModelError(f"{path.name}: {_human(size)} is above the cap of "
                             f"{_human(max_bytes)}")
        data, name = path.read_bytes(), path.stem
    if len(data) > max_bytes:
        raise ModelError(f"the model is {_human(len(data))}, above the cap of "
                         f"{_human(max_bytes)}")
    if not data:
        raise ModelError("the file is empty, not an ONNX model")
    return data, name


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ModelError("not an ONNX model: the file does not parse as one (truncated, "
                             "or another format)")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes, start: int, end: int, wanted: int,
            limit: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each length-delimited field ``wanted`` of the message in
    ``data[start:end]`` (the first ``limit`` + 1 at most), read from the wire format without
    building any object."""
    out, i = [], start
    while i < end and (limit is None or len(out) <= limit):
        key = data[i]
        if key < 0x80:  # every ONNX field number fits a one-byte key
            i += 1
        else:
            key, i = _varint(data, i)
        wire = key & 7
        if wire == 2:
            n = data[i] if i < end else 0x80
            if n < 0x80:
                i += 1
            else:
                n, i = _varint(data, i)
            if key >> 3 == wanted and i + n <= end:
                out.append((i, i + n))
            i += n
        elif wire == 0:
            _, i = _varint(data, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ModelError("not an ONNX model: the file does not parse as one (truncated, "
                             "or another format)")
    return out


def count_nodes(data: bytes, limit: int = MAX_NODES) -> int:
    """The graph's node count (counting stops past ``limit``), read from the wire before
    parsing: a file of a million nodes is refused without building a million objects."""
    count = 0
    for g0, g1 in _fields(data, 0, len(data), 7):  # ModelProto.graph (repeated: merged)
        count += len(_fields(data, g0, g1, 1, limit - count))  # GraphProto.node
        if count > limit:
            break
    return count


def parse(data: bytes) -> Any:
    """The ``onnx.ModelProto`` in ``data``, checked for a graph, an opset and a size."""
    import onnx
    from google.protobuf.message import DecodeError

    if count_nodes(data) > MAX_NODES:
        raise ModelError(f"the model has more than {MAX_NODES:,} nodes (the cap)")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelError("not an ONNX model: the file does not parse as one (truncated, or "
                         "another format)") from None
    if not proto.HasField("graph") or not proto.ir_version:
        raise ModelError("not an ONNX model: the file has no graph (truncated, or another "
                         "format)")
    if not proto.graph.node:
        raise ModelError("the model's graph has no nodes")
    opset = opset_of(proto)
    if opset < MIN_OPSET:
        raise ModelError(f"opset {opset} is older than {MIN_OPSET}, the oldest read here "
                         "(convert the model with onnx.version_converter)")
    return proto


def opset_of(proto: Any) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("not an ONNX model: it imports no version of the standard operators")


def check_initializers(proto: Any) -> None:
    """Refuse an initializer that declares more values than the file holds for it."""
    import onnx

    for init in proto.graph.initializer:
        if any(d < 0 for d in init.dims):
            raise ModelError(f"initializer {init.name!r} has a negative dimension "
                             f"{list(init.dims)}")
        declared = math.prod(init.dims)
        if init.data_location == onnx.TensorProto.EXTERNAL or declared == 0:
            continue  # external data is never read (weights are not needed)
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 4
        if init.raw_data:
            held = len(init.raw_data) // max(1, itemsize)
        else:
            held = max(len(init.float_data), len(init.int32_data), len(init.int64_data),
                       len(init.double_data), len(init.uint64_data), len(init.string_data))
            if init.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
                held //= 2
        if held < declared:
            raise ModelError(f"initializer {init.name!r} declares {list(init.dims)} "
                             f"({_human(declared * itemsize)}) but the file holds "
                             f"{_human(held * itemsize)} of it: a truncated or malformed file")


def node_names(proto: Any) -> list[str]:
    """Each node's name, unique: its own, or ``<op_type>_<index>`` when it has none."""
    seen: set[str] = set()
    out = []
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        out.append(name)
    return out


def topological_order(proto: Any, names: list[str]) -> list[int]:
    """Node indices, producers first; refuses a tensor written twice, read but never written,
    or a cycle (naming the nodes on it)."""
    graph = proto.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | \
        {i.values.name for i in graph.sparse_initializer} | {""}
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in available:
                raise ModelError(f"tensor {out!r} is written twice (by node {names[i]!r} and "
                                 "another): a malformed graph")
            producer[out] = i
    waiting = [0] * len(graph.node)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in set(node.input):
            if t in available:
                continue
            if t not in producer:
                raise ModelError(f"node {names[i]!r} reads {t!r}, which no node, input or "
                                 "initializer provides (a truncated or malformed file)")
            waiting[i] += 1
            readers.setdefault(producer[t], []).append(i)
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) < len(graph.node):
        raise ModelError(f"the graph has a cycle: {_cycle(graph, names, waiting, producer)}")
    return order


def _cycle(graph: Any, names: list[str], waiting: list[int], producer: dict[str, int]) -> str:
    """``a -> b -> a``: one cycle among the nodes left unsorted."""
    i = next(k for k, w in enumerate(waiting) if w > 0)
    path: list[int] = []
    while i not in path:
        path.append(i)
        i = next(producer[t] for t in graph.node[i].input
                 if t in producer and waiting[producer[t]] > 0)
    loop = path[path.index(i):]
    return " -> ".join(names[k] for k in reversed([*loop, loop[0]]))


def data_input(proto: Any) -> Any:
    """The graph's one data input: an input that is not an initializer and is read as data
    (not only as a weight) by some node."""
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    as_data: set[str] = set()
    for node in graph.node:
        slots = PARAM_SLOTS.get(node.op_type, frozenset())
        as_data.update(t for k, t in enumerate(node.input) if k not in slots)
    found = [i for i in graph.input if i.name not in inits and i.name in as_data]
    if not found:
        raise ModelError("the model has no data input (every input is a weight or unused)")
    if len(found) > 1:
        listed = ", ".join(repr(i.name) for i in found[:4])
        raise ModelError(f"the model has {len(found)} data inputs ({listed}); only models with "
                         "one are read")
    return found[0]


def fix_input_shape(value_info: Any, input_shape: Any) -> tuple[int, ...]:
    """The data input's static shape, from the file or ``input_shape``; sets it in place."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        dims: list[Any] = [None] * (len(input_shape) if input_shape else 4)
    else:
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                (d.dim_param or None) for d in tensor.shape.dim]
    shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    if input_shape is None:
        if not all(isinstance(d, int) for d in dims):
            raise ModelError(f"input {value_info.name!r} has dynamic dims {shown}: give its "
                             "shape (--input-shape N,C,H,W, or input_shape=)")
        shape = tuple(dims)
    else:
        try:
            shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            raise ModelError(f"input shape {input_shape!r} is not a list of integers") from None
        if len(shape) != len(dims) or any(s < 1 for s in shape):
            raise ModelError(f"input shape {list(shape)} does not fit input "
                             f"{value_info.name!r} {shown}")
        clash = [(s, d) for s, d in zip(shape, dims, strict=True) if isinstance(d, int)
                 and d != s]
        if clash:
            raise ModelError(f"input shape {list(shape)} contradicts input "
                             f"{value_info.name!r} {shown}")
    if len(shape) != 4:
        raise ModelError(f"input {value_info.name!r} has rank {len(shape)}; chains read NCHW "
                         "images (rank 4)")
    tensor.ClearField("shape")
    for d in shape:
        tensor.shape.dim.add().dim_value = d
    return shape


def infer_shapes(proto: Any) -> dict[str, tuple[int, ...]]:
    """Tensor name -> static shape, from ``onnx.shape_inference`` (unknown ones left out)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False,
                                                     strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"shape inference failed: {first[:300]}") from None
    graph = inferred.graph
    out: dict[str, tuple[int, ...]] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    for init in graph.initializer:
        out.setdefault(init.name, tuple(int(d) for d in init.dims))
    return out


def load_model(source: bytes | str | Path, input_shape: Any = None, *,
               max_bytes: int = MAX_BYTES, name: str = "") -> Model:
    """Read an ONNX model (a path or its bytes) as a :class:`Model`.

    Parameters
    ----------
    source
        A ``.onnx`` file's path, or its bytes.
    input_shape
        The data input's NCHW shape, needed when the file leaves some of it dynamic (and
        checked against the file's dims otherwise).
    max_bytes
        Refuse a larger file before reading it.
    name
        The model's name (default: the graph's, else the file's stem).

    Raises
    ------
    ModelError
        One line: what is wrong with the file, or what is missing.
    """
    import onnx

    from playground.model.layers import map_nodes

    data, stem = read_bytes(source, max_bytes)
    proto = parse(data)
    check_initializers(proto)
    names = node_names(proto)
    order = topological_order(proto, names)
    graph = proto.graph
    nodes = [graph.node[i] for i in order]
    node_name = [names[i] for i in order]
    graph.ClearField("node")
    graph.node.extend(nodes)
    inp = data_input(proto)
    shape = fix_input_shape(inp, input_shape)
    shapes = infer_shapes(proto)
    elem = inp.type.tensor_type.elem_type
    dtype = "float16" if elem == onnx.TensorProto.FLOAT16 else "float32"
    mapped: list[Node]
    mapped, outputs = map_nodes(proto, node_name, inp.name, shapes, opset_of(proto), dtype)
    data = {t for n in mapped for t in (*n.inputs, *n.outputs)}
    return Model(name or graph.name or stem, opset_of(proto), inp.name, shape, tuple(mapped),
                 dtype, {k: v for k, v in shapes.items() if k in data}, tuple(outputs))
