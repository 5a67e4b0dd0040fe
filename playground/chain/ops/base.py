"""The op record's defaults (:class:`Op`), its fields (:func:`field`) and the error an op
raises (:class:`LayerError`); see :mod:`playground.chain.ops`."""

import math

#: Field kinds: one integer, an (h, w) pair, four paddings (top, left, bottom, right; two in
#: the editor), a number, the name of an earlier tensor.
INT, PAIR, SIDES, FLOAT, TENSOR = "int", "pair", "sides", "float", "tensor"


class LayerError(ValueError):
    """A layer that cannot be built: ``LayerError(field, message)``; the spec adds the layer."""


def field(name, kind, default=None, *, minimum=1, label="", required="", optional=False,
          editable=True, step=None, shown=None, tip=""):
    """One field of an op's layers.

    ``default`` (a value, or a function of the layer's fields before this one) fills it in
    when absent; ``required`` (what it means) makes it mandatory; ``optional`` leaves it out
    when absent. ``label``, ``step``, ``shown`` (a printf format), ``tip`` and ``editable``
    are for the chain editor.
    """
    return {"name": name, "kind": kind, "default": default, "minimum": minimum,
            "label": label or name, "required": required, "optional": optional,
            "editable": editable, "step": step, "shown": shown, "tip": tip}


def window_hw(h, w, layer):
    """Output height and width of a window layer on an h x w input (may be <= 0)."""
    (kh, kw), (sh, sw) = layer["kernel"], layer["stride"]
    (dh, dw), (pt, pl, pb, pr) = layer.get("dilation", (1, 1)), layer["padding"]
    return (h + pt + pb - (kh - 1) * dh - 1) // sh + 1, (w + pl + pr - (kw - 1) * dw - 1) // sw + 1


class Op:
    """The defaults every op record starts from.

    Each op also defines ``te(x, layer, params, tensors)``, its te stage(s) on the te tensor
    ``x`` (``params``: its parameters' placeholders by suffix, ``tensors``: the earlier layers'
    outputs by name), and ``numpy(x, layer, params, tensors)``, the same on float64 arrays.
    """

    name = ""
    prefix = ""
    short = ""  # in one-line descriptions of a chain; the name when empty
    kind = "elementwise"
    onnx = ()
    fields = ()
    params = ()  # (suffix, shape(layer, channels), (low, high)(layer, channels))
    helpers = ()  # suffixes of the per-channel blocks the builder adds (bn1_scale)

    @staticmethod
    def check(layer):
        """Raise :class:`LayerError` when the fields disagree (each is valid on its own)."""

    @staticmethod
    def infer(layer, shape, shapes):
        """The output shape for an input of ``shape`` (``shapes``: the earlier tensors')."""
        return list(shape)

    @staticmethod
    def flop(layer, shape, out):
        """Floating-point operations from input ``shape`` to output ``out``: one per element."""
        return float(math.prod(out))

    @staticmethod
    def starter(shapes, last):
        """The fields of a layer of this op added after tensor ``last`` in the editor."""
        return {}

    @classmethod
    def label(cls, layer):
        return cls.short or cls.name
