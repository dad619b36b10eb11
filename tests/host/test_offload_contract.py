"""host/offload.py uses HostStack only through its public names (the offload contract:
park/unpark/remove, steer/unsteer/deliver, touch, replay, send_raw, nic_send, ...), so a
change to the stack's tables or timers cannot silently break the offloads."""

import ast
import pathlib

import acceltcp.host.offload as offload_mod
from acceltcp.host.stack import HostStack

SRC = pathlib.Path(offload_mod.__file__)


def _stack_expr(node):
    """`st`, `stack`, `self.stack`: the names offload.py gives the HostStack."""
    if isinstance(node, ast.Name):
        return node.id in ("st", "stack")
    return (isinstance(node, ast.Attribute) and node.attr == "stack"
            and isinstance(node.value, ast.Name) and node.value.id == "self")


def stack_attrs(source):
    """-> [(line, attribute)] of every attribute of the stack the source reads or sets."""
    return [(n.lineno, n.attr) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Attribute) and _stack_expr(n.value)]


def test_checker_sees_private_access():
    src = "def f(self, st, stack):\n    st._table\n    self.stack._touch(1)\n" \
          "    stack._c = 1\n    self.stack.touch(1)\n"
    assert sorted(a for _, a in stack_attrs(src) if a.startswith("_")) == \
        ["_c", "_table", "_touch"]


def test_offload_uses_only_public_stack_names():
    used = stack_attrs(SRC.read_text())
    private = [(line, a) for line, a in used if a.startswith("_")]
    assert private == []
    names = {a for _, a in used}
    missing = sorted(a for a in names if not hasattr(HostStack, a)
                     and a not in ("mac", "ip", "clock", "drops"))     # instance attributes
    assert missing == []
    for a in names:
        member = getattr(HostStack, a, None)
        if member is not None and callable(member):
            assert member.__doc__, a
