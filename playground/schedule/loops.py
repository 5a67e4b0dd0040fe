"""Loops by name: the one helper exported scripts share with the library.

Loop handles die when a primitive replaces a loop, so steps name loops by their loop
variable around a block (``loop(sch, "conv2", "h_0")``). When a block's nest holds two loops of
the same name, the second is ``name#2`` (1-based occurrence). This module imports only tvm:
exported scripts embed its source.
"""


def loop_labels(names):
    """Loop variable names, outer to inner, as steps name them: the k-th repeat is ``name#k``.
    The one naming rule: :mod:`playground.schedule.ir` names the loops it reads with it."""
    seen, out = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def loop_names(sch, block):
    """Names of the loops around ``block`` (outer to inner), made unique with ``#k``."""
    return loop_labels(sch.get(rv).loop_var.name for rv in sch.get_loops(sch.get_sblock(block)))


def loop(sch, block, name):
    """The loop called ``name`` around ``block``; ValueError naming the loops that exist."""
    names = loop_names(sch, block)
    if name not in names:
        raise ValueError(f"block {block!r} has no loop {name!r} (its loops: "
                         f"{', '.join(names) or 'none'})")
    return sch.get_loops(sch.get_sblock(block))[names.index(name)]
