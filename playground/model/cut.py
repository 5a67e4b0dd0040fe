"""Cut a model into playground chains: every conv in exactly one, identical ones counted once.

A chain is a straight run of layers, each reading the one before (an ``add`` also reads an
earlier tensor of the run, or the run's input): it produces one tensor. So a run must end
where one of its tensors is read by a node outside it or is a model output — *a tensor that
feeds more than one later layer outside the chain breaks it* — and where the next node is not
a chain layer. A long run is split so that each chain holds at most ``max_convs`` window
layers (conv, pool), each with its epilogue (bias, batch norm, activations, a residual add).

The cutter walks the nodes in topological order. From each layer not yet in a chain it grows
the longest run greedily (an add joins when its other input is the run's input — or, with
``inner_residuals``, any tensor already in the run), then keeps
the longest prefix that is a valid chain: within ``max_convs`` window layers and the spec's
32 layers, no inner tensor read from outside, and accepted by
:func:`~playground.chain.spec.normalize_chain` (caps on size and work). The rest of the run is
left for the chains that start after it. An add whose other input comes from another chain
(a downsampling shortcut) cannot be in a chain and is listed with the ops left out.

Identical chains (the same normalized JSON: shapes, layers and their order) are returned once
by :func:`cut_chains`, with every occurrence's nodes.

Why residuals read the chain's input by default: the templates fold an add into the window
layer before it, and cannot yet place a second producer (an earlier layer of the chain) under
that layer's tiles, so a chain whose add reads an inner layer has no schedule (measured on
ResNet-18: its three blocks after a downsampling add came out as relu -> block with
``add.other = "relu1"``, and every candidate failed). Cut at that tensor instead, the block is
the same chain as the others (``other = "data"``) and the leading relu a chain of its own.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from playground.chain.ops import OPS, tensor_field
from playground.chain.spec import (
    INPUT_NAME,
    WINDOW_OPS,
    chain_to_json,
    default_name,
    normalize_chain,
)
from playground.errors import ChainError
from playground.model.graph import Model, ModelError, Node

#: The chain spec's limit on layers.
MAX_LAYERS = 32


@dataclass(frozen=True)
class Piece:
    """One chain where it occurs in the model: the normalized chain and its source nodes."""

    chain: dict
    nodes: tuple[str, ...]
    flop: float  # its window layers' FLOPs


@dataclass(frozen=True)
class ModelChain:
    """A distinct chain of the model, with every place it occurs.

    Attributes
    ----------
    chain
        The normalized chain (plain JSON; ``Session.new(normalize_chain(chain))`` opens it).
    occurrences
        The source node names of each occurrence, in model order.
    flop
        One occurrence's conv and pool FLOPs.
    """

    chain: dict
    occurrences: tuple[tuple[str, ...], ...]
    flop: float

    @property
    def nodes(self) -> tuple[str, ...]:
        """The first occurrence's source nodes."""
        return self.occurrences[0]

    @property
    def count(self) -> int:
        """How many times the chain occurs in the model."""
        return len(self.occurrences)

    @property
    def key(self) -> str:
        """The chain's canonical JSON: equal for identical chains."""
        return chain_to_json(self.chain)

    @property
    def windows(self) -> int:
        return sum(layer["op"] in WINDOW_OPS for layer in self.chain["layers"])

    def describe(self) -> str:
        """E.g. ``[1, 64, 56, 56] conv3x3/1 64 + bn, relu -> conv3x3/1 64 + bn, add, relu``."""
        parts: list[str] = []
        for layer in self.chain["layers"]:
            short = OPS[layer["op"]].label(layer)
            if layer["op"] in WINDOW_OPS:
                parts.append(short)
            else:
                parts[-1:] = [f"{parts[-1]} + {short}" if parts and " + " not in parts[-1]
                              else f"{parts[-1]}, {short}" if parts else short]
        return f"{self.chain['input']['shape']} " + " -> ".join(parts)

    def to_dict(self) -> dict:
        return {"nodes": list(self.nodes), "chain": self.chain, "count": self.count,
                "flop": self.flop, "occurrences": [list(o) for o in self.occurrences],
                "describe": self.describe()}

    @classmethod
    def from_dict(cls, raw: dict) -> ModelChain:
        return cls(raw["chain"], tuple(tuple(o) for o in raw["occurrences"]),
                   float(raw["flop"]))


class _Graph:
    def __init__(self, model: Model) -> None:
        self.nodes = model.nodes
        self.readers: dict[str, list[int]] = {}
        for i, n in enumerate(model.nodes):
            for t in set(n.inputs):
                self.readers.setdefault(t, []).append(i)
        self.outputs = set(model.outputs)


def _grow(g: _Graph, start: int, taken: set[int], inner_residuals: bool) -> list[int]:
    """The longest straight run from ``start`` (see the module docstring), up to one node past
    :data:`MAX_LAYERS`: every node adds at least one layer, so no valid chain is longer, and
    growing further made cutting a long straight network cubic in its length (8,000 relus:
    176 s)."""
    first = g.nodes[start]
    run, members, seen = [start], {start}, {first.inputs[0], first.outputs[0]}
    allowed = seen if inner_residuals else {first.inputs[0]}
    current = first.outputs[0]
    while len(run) <= MAX_LAYERS:
        nxt = None
        for j in g.readers.get(current, ()):
            n = g.nodes[j]
            if j in taken or j in members or not n.layers:
                continue
            if tensor_field(n.layers[0]["op"]):
                other = n.inputs[1] if n.inputs[0] == current else n.inputs[0]
                ok = current in n.inputs and other in allowed
            else:
                ok = n.inputs[0] == current
            if ok:
                nxt = j
                break
        if nxt is None:
            break
        run.append(nxt)
        members.add(nxt)
        current = g.nodes[nxt].outputs[0]
        seen.add(current)
    return run


def _valid_prefix(g: _Graph, run: list[int], max_convs: int) -> int:
    """The length of the longest prefix of ``run`` whose inner tensors stay inside it and
    which holds at most ``max_convs`` window layers and :data:`MAX_LAYERS` layers."""
    best, windows, layers = 1, 0, 0
    for length in range(1, len(run) + 1):
        node = g.nodes[run[length - 1]]
        windows += node.is_window
        layers += len(node.layers)
        if windows > max_convs or layers > MAX_LAYERS:
            break
        inside = set(run[:length])
        inner = [g.nodes[i].outputs[0] for i in run[:length - 1]]
        if all(t not in g.outputs and all(r in inside for r in g.readers.get(t, ()))
               for t in inner):
            best = length
    return best


def _chain(model: Model, nodes: list[Node]) -> dict:
    """The normalized chain of a run of nodes (raises ChainError when the spec refuses it)."""
    first = nodes[0]
    names = {first.inputs[0]: INPUT_NAME}
    counts: Counter[str] = Counter()
    layers = []
    current = first.inputs[0]
    for n in nodes:
        for layer in n.layers:
            counts[layer["op"]] += 1
            raw = dict(layer)
            second = tensor_field(layer["op"])
            if second:
                a, b = n.inputs
                raw[second] = names[b if a == current else a]
            layers.append(raw)
        current = n.outputs[0]
        names[current] = default_name(n.layers[-1]["op"], counts[n.layers[-1]["op"]])
    shape = model.shapes.get(first.inputs[0])
    if shape is None:
        raise ChainError(f"the shape of {first.inputs[0]!r} is unknown")
    return normalize_chain({"input": {"shape": list(shape), "dtype": model.dtype},
                            "layers": layers})


def _startable(n: Node) -> bool:
    return bool(n.layers) and (not tensor_field(n.layers[0]["op"])
                               or n.inputs[0] == n.inputs[-1])


def cut(model: Model, max_convs: int = 3, *, inner_residuals: bool = False) -> list[Piece]:
    """Every chain occurrence, in model order (see the module docstring)."""
    if isinstance(max_convs, bool) or not isinstance(max_convs, int) or max_convs < 1:
        raise ModelError(f"max_convs must be an integer >= 1, got {max_convs!r}")
    g = _Graph(model)
    taken: set[int] = set()
    pieces: list[Piece] = []
    for i, node in enumerate(model.nodes):
        if i in taken or not _startable(node):
            continue
        run = _grow(g, i, taken, inner_residuals)
        length = _valid_prefix(g, run, max_convs)
        while length:
            members = [model.nodes[k] for k in run[:length]]
            try:
                chain = _chain(model, members)
            except ChainError:
                length -= 1
                continue
            taken.update(run[:length])
            pieces.append(Piece(chain, tuple(n.name for n in members),
                                math.fsum(n.flop for n in members if n.is_window)))
            break
    return pieces


def cut_chains(model: Model, max_convs: int = 3, *,
               inner_residuals: bool = False) -> list[ModelChain]:
    """The model's distinct chains, in order of first occurrence, each with its count.

    ``inner_residuals`` lets an add read any earlier layer of its chain, not only the chain's
    input (see the module docstring for why that is off by default).

    Raises
    ------
    ModelError
        For a ``max_convs`` below 1.
    """
    by_key: dict[str, list[Piece]] = {}
    for piece in cut(model, max_convs, inner_residuals=inner_residuals):
        by_key.setdefault(chain_to_json(piece.chain), []).append(piece)
    return [ModelChain(ps[0].chain, tuple(p.nodes for p in ps), ps[0].flop)
            for ps in by_key.values()]


def left_out(model: Model, chains: list[ModelChain]) -> dict[str, int]:
    """Op type -> count of the model's nodes in no chain (not chain layers, or layers that
    could not join one, such as a shortcut's add)."""
    inside = {name for c in chains for occ in c.occurrences for name in occ}
    return dict(sorted(Counter(n.op_type for n in model.nodes
                               if n.name not in inside).items()))
