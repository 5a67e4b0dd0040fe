"""A chain cut into stages: each window layer (conv, pool) with the elementwise layers after it.

Templates schedule a chain stage by stage. A *stage* is one window layer (``conv2d``,
``max_pool2d``, ``avg_pool2d``) plus the elementwise layers that follow it up to the next window
layer: its *epilogue*, which a template folds into the window layer's write-back. Elementwise
layers before the first window layer form a stage of their own (``kind == "elementwise"``).
The stage knows its blocks by the names :mod:`playground.chain.compute` gives them.

Example: conv -> bn -> relu -> conv -> add -> relu -> maxpool gives three stages,
``conv1 [bn1, relu1]``, ``conv2 [add1, relu2]`` and ``maxpool1 []``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from playground.chain.ops import OPS
from playground.chain.spec import INPUT_NAME, WINDOW_OPS, tensor_shapes


@dataclass(frozen=True)
class Stage:
    """One window layer and its epilogue, with shapes and block names."""

    kind: str  # "conv", "pool" or "elementwise"
    layer: dict  # the window layer (the first elementwise layer for kind "elementwise")
    epilogue: tuple[dict, ...] = ()
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()  # the window layer's output (= the epilogue's)
    input_name: str = INPUT_NAME  # the tensor the stage reads
    output_name: str = ""  # the tensor the stage's last layer writes
    helpers: tuple[str, ...] = field(default=())  # per-channel blocks (bn scale, shift)

    @property
    def name(self) -> str:
        return self.layer["name"]

    @property
    def pad_block(self) -> str | None:
        """The padding block, when the window layer pads."""
        if self.kind == "elementwise":
            return None
        return f"{self.name}_pad" if any(self.layer["padding"]) else None

    @property
    def epilogue_blocks(self) -> list[str]:
        return [e["name"] for e in self.epilogue]

    @property
    def flop(self) -> float:
        n, k, oh, ow = self.out_shape
        if self.kind == "conv":
            kh, kw = self.layer["kernel"]
            return 2.0 * n * k * oh * ow * (self.in_shape[1] // self.layer["groups"]) * kh * kw
        if self.kind == "pool":
            kh, kw = self.layer["kernel"]
            return float(n * k * oh * ow * kh * kw)
        return float(n * k * oh * ow) * (1 + len(self.epilogue))

    @property
    def is_depthwise(self) -> bool:
        return self.kind == "conv" and self.layer["groups"] > 1 and \
            self.layer["groups"] == self.in_shape[1]

    @property
    def is_pointwise(self) -> bool:
        return self.kind == "conv" and self.layer["kernel"] == [1, 1] and \
            self.layer["stride"] == [1, 1] and not any(self.layer["padding"])

    def describe(self) -> str:
        if self.kind == "elementwise":
            return "+".join([self.name, *self.epilogue_blocks])
        tail = f" + {', '.join(self.epilogue_blocks)}" if self.epilogue else ""
        return f"{self.name}{tail}"


def stages(chain: dict) -> list[Stage]:
    """The chain's stages in order (see the module docstring)."""
    shapes = tensor_shapes(chain)
    out: list[Stage] = []
    previous = INPUT_NAME
    current: dict | None = None

    def close() -> None:
        if current is None:
            return
        epi = current["epilogue"]
        last = epi[-1]["name"] if epi else current["layer"]["name"]
        own = [current["layer"]] if current["kind"] == "elementwise" else []
        helpers = tuple(e["name"] + suffix for e in (*own, *epi)
                        for suffix in OPS[e["op"]].helpers)
        out.append(Stage(current["kind"], current["layer"], tuple(epi),
                         tuple(shapes[current["input"]]),
                         tuple(shapes[current["layer"]["name"]]), current["input"], last,
                         helpers))

    for layer in chain["layers"]:
        if layer["op"] in WINDOW_OPS or current is None:  # a window layer starts a stage
            close()
            current = {"kind": OPS[layer["op"]].kind, "layer": layer, "epilogue": [],
                       "input": previous}
        else:
            current["epilogue"].append(layer)
        previous = layer["name"]
    close()
    return out
