"""The one IR reader (:mod:`playground.schedule.ir`): blocks, loops, guards and the loop tree
of real scheduled chains, and a rule that no other module dispatches on TIR class names."""

from __future__ import annotations

import ast

import paths
import pytest
import tvm
from helpers import CONV_RELU_CONV, fuse_two_convs
from tvm import s_tir, tirx

from playground.chain.spec import normalize_chain
from playground.compile.gpu import placements
from playground.io.presets import load_preset
from playground.schedule import ir
from playground.schedule.loops import loop_names
from playground.schedule.replay import scheduled
from playground.schedule.steps import Step
from playground.schedule.views import nest_text

ROOT = paths.ROOT

#: conv1 (and relu1, the pads) at 5x5 tiles of conv2 (16 is not a multiple: T.where guards),
#: then conv1_pad moved under conv1's own tile loop: two loops named ax0 around it.
NESTED = [*fuse_two_convs(5), Step("compute_at", {"block": "conv1_pad", "target_block": "conv1",
                                                  "target_loop": "ax1"})]

BRANCHES = '''
# from tvm.script import ir as I
# from tvm.script import tirx as T

@I.ir_module
class Module:
    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((8,), "float32"), B: T.Buffer((8,), "float32")):
        for i in range(8):
            if i < 4:
                with T.sblock("low"):
                    vi = T.axis.spatial(8, i)
                    B[vi] = A[vi]
            else:
                with T.sblock("high"):
                    vi = T.axis.spatial(8, i)
                    B[vi] = A[vi] * T.float32(2)
'''


@pytest.fixture(scope="module")
def nested() -> s_tir.Schedule:
    return scheduled(normalize_chain(CONV_RELU_CONV), NESTED)


def test_the_names_the_reader_exports_are_tvm_classes():
    exported = [v for k, v in vars(ir).items() if k[:1].isupper() and not k.isupper() and k not in
                ("Any", "Block", "Branch", "Loop", "Node", "Iterable", "Iterator")]
    assert len(exported) > 15
    assert all(isinstance(v, type) for v in exported), [v for v in exported
                                                         if not isinstance(v, type)]


def test_blocks_come_in_program_order_with_shared_outer_loops(nested):
    blocks = ir.blocks(nested)
    assert [b.name for b in blocks] == ["conv1_pad", "conv1", "relu1", "conv2_pad", "conv2"]
    assert ir.block_names(nested) == [b.name for b in blocks]
    pad, conv1, *_, conv2 = blocks
    # one record per For node: the tile loops of conv2 are the very objects around conv1
    assert all(a is b for a, b in zip(conv1.loops[:3], conv2.loops[:3], strict=True))
    assert pad.loops[:5] == conv1.loops[:5]
    assert ir.blocks_under(conv2.loops[2], blocks) == blocks
    assert [lp.name for lp in ir.loops_below(conv1.loops[4], blocks)] == [
        "ax0#2", "ax1#2", "ax2", "ax2", "ax3", "ax4", "ax5"]
    assert conv2.is_reduction and not pad.is_reduction
    assert conv2.reads == ("conv2_pad", "conv2_weight") and conv2.writes == ("conv2",)
    assert all(b.leaf for b in blocks)


def test_loop_names_repeat_as_steps_write_them_and_agree_with_the_scripts_helper(nested):
    pad = ir.blocks(nested)[0]
    assert [lp.name for lp in pad.loops] == ["n", "h_0", "w_0", "ax0", "ax1", "ax0#2",
                                             "ax1#2", "ax2"]
    for b in ir.blocks(nested):
        assert [lp.name for lp in b.loops] == loop_names(nested, b.name)
    assert ir.loop_labels(["i", "j", "i", "i"]) == ["i", "j", "i#2", "i#3"]
    assert [(lp.min, lp.extent, lp.kind, lp.thread) for lp in pad.loops[:2]] == [
        (0, 1, "serial", ""), (0, 4, "serial", "")]


def test_guards_hold_the_where_predicates_and_defs_bind_iteration_vars(nested):
    conv1 = ir.blocks(nested)[1]
    assert [str(g) for g in conv1.guards] == ["1 <= h_0 * 5 + ax1", "h_0 * 5 + ax1 < 17",
                                              "1 <= w_0 * 5 + ax2", "w_0 * 5 + ax2 < 17"]
    assert {ir.var_key(iv.var) for iv, _ in conv1.bindings()} <= conv1.defs.keys()
    loops = {ir.var_key(lp.var) for lp in conv1.loops}
    assert ir.var_keys(conv1.guards[0]) <= loops


def test_if_statements_are_branches_of_the_tree_and_guard_their_blocks():
    mod = tvm.script.from_source(BRANCHES)
    (loop,) = ir.tree(mod)
    (branch,) = loop.children
    assert isinstance(branch.item, ir.Branch)
    assert [n.item.name for n in branch.children] == ["low"]
    assert [n.item.name for n in branch.orelse] == ["high"]
    low, high = ir.blocks(mod)
    assert [str(g) for g in low.guards] == ["i < 4"]
    assert [str(g) for g in high.guards] == ["not i < 4"]
    assert nest_text(mod).splitlines() == ["for i in 8", "  if i < 4", "    block low",
                                           "  else", "    block high"]


def test_gpu_bound_loops_carry_their_thread_and_start_kernels():
    chain, steps, _ = load_preset("cuda_conv_relu")
    sch = scheduled(chain, steps)
    bound = [lp for b in ir.blocks(sch) for lp in b.loops if lp.thread]
    assert bound and all(lp.kind == "thread_binding" for lp in bound)
    assert {lp.thread for lp in bound} >= {"blockIdx.x", "threadIdx.x"}
    places, scopes = placements(sch)
    assert {p.kernel for p in places} == {0}
    assert all(isinstance(s, str) for s in scopes.values())


def test_statements_visit_every_kind_in_program_order(nested):
    kinds = [type(s) for s in ir.statements(ir.body(nested))]
    assert kinds[0] is ir.SBlockRealize and kinds.count(ir.SBlock) == 6  # root + five
    assert {ir.For, ir.SeqStmt, ir.BufferStore} <= set(kinds)
    names = [s.name_hint for s in ir.statements(ir.body(nested)) if isinstance(s, ir.SBlock)]
    assert names == ["root", *ir.block_names(nested)]
    assert [str(b.name) for b in ir.allocations(nested)] == [
        "conv1_pad", "conv1", "relu1", "conv2_pad"]


def test_expression_helpers():
    x, y = tirx.Var("x", "int32"), tirx.Var("y", "int32")
    cond = tirx.all(x < 4, 0 <= y, tvm.tirx.const(1, "bool"))
    assert [str(c) for c in ir.conjuncts(cond)] == ["x < 4", "y >= 0"]
    assert ir.var_keys(x * 2 + y) == {ir.var_key(x), ir.var_key(y)}
    assert ir.constant(tvm.tirx.const(7, "int32")) == 7 and ir.constant(x) is None
    assert ir.call_name(tvm.tirx.if_then_else(x < 1, x, y)).endswith("if_then_else")


# ----------------------------------------------------------------------------- the rule

#: TIR class names, now and before 0.27 (LetStmt, Allocate, Block, BlockRealize).
TIR_NAMES = {n for mod in (tirx.stmt, tirx.expr, s_tir.stmt, tvm.ir.expr)
             for n, c in vars(mod).items() if isinstance(c, type)} | {
    "LetStmt", "Allocate", "Block", "BlockRealize", "Call", "BufferLoad", "IntImm", "Var"}


def _is_type_name(node: ast.AST) -> bool:
    """``type(x).__name__``."""
    return (isinstance(node, ast.Attribute) and node.attr == "__name__"
            and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "type")


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def type_name_dispatch(source: str) -> list[int]:
    """Lines that compare ``type(x).__name__`` (directly or through a variable) with a TIR
    class name, or look it up in a table keyed by TIR class names."""
    tree = ast.parse(source)
    names = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and _is_type_name(n.value)
             for t in n.targets if isinstance(t, ast.Name)}
    tables = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Dict) and TIR_NAMES & _strings(n.value)
              for t in n.targets if isinstance(t, ast.Name)}

    def is_kind(node: ast.AST) -> bool:
        return _is_type_name(node) or (isinstance(node, ast.Name) and node.id in names)

    lines = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare):
            sides = [n.left, *n.comparators]
            if any(is_kind(s) for s in sides) and TIR_NAMES & set().union(
                    *(_strings(s) for s in sides if not is_kind(s))):
                lines.append(n.lineno)
        elif isinstance(n, ast.Subscript | ast.Call):
            target = n.value if isinstance(n, ast.Subscript) else n.func
            if isinstance(target, ast.Attribute):
                target = target.value
            args = [n.slice] if isinstance(n, ast.Subscript) else n.args
            if isinstance(target, ast.Name) and target.id in tables and any(map(is_kind, args)):
                lines.append(n.lineno)
    return lines


def test_the_rule_finds_name_dispatch():
    assert type_name_dispatch("kind = type(s).__name__\nif kind == 'SeqStmt':\n    pass\n") == [2]
    assert type_name_dispatch("ok = type(s).__name__ in ('For', 'While')\n") == [1]
    assert type_name_dispatch("T = {'Add': 1}\nk = type(e).__name__\nf = T.get(k)\n") == [3]
    assert type_name_dispatch("raise E(f'got {type(x).__name__}')\n") == []
    assert type_name_dispatch("if type(x).__name__ == 'dict':\n    pass\n") == []


def test_no_module_dispatches_on_tir_class_names_outside_the_reader():
    found = []
    for path in sorted([*(ROOT / "playground").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
                        ROOT / "app.py"]):
        if path == ROOT / "playground" / "schedule" / "ir.py" or not path.exists():
            continue
        found += [f"{path.relative_to(ROOT)}:{line}"
                  for line in type_name_dispatch(path.read_text())]
    assert found == [], ("read TIR through playground.schedule.ir (isinstance on the classes "
                         f"it names), not by type(x).__name__: {found}")
