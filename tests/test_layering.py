"""Import layering of src/acceltcp (issue 13): nothing imports upward.

Layers, lowest first (a package may import its own layer's peers only where listed
in ``PEERS``, and any lower layer)::

    0 wire                      frame codecs, control messages, checksums
    1 tcp                       the TCB, TIME-WAIT, sequence arithmetic (sans-I/O)
    2 io                        devices: TAP, pcap, the NIC channel, deadlines
    3 nic, host                 the NIC dataplane; the host stack and its runners
    4 apps                      echo, http, kv, lb, ...
    5 serve, eval, testbed      processes, benchmarks, test beds (testbed/simnet.py: the
                                simulated pair, host stacks + NIC on io.sim links)
    6 cli                       the command line (acceltcp)

``io`` (devices: TAP, pcap, the simulated network, the NIC channel) imports no other
acceltcp package today. It goes above ``tcp`` and below ``nic``/``host``: the sans-I/O
layers (``wire``, ``tcp``) must not reach a device, while ``nic`` (its placements,
``nic/placements/``), ``host`` and everything above open devices from it. Within
layer 5, ``eval`` drives ``serve``'s
servers and both use ``testbed`` (``PEERS``); ``testbed`` and ``serve`` import neither
``eval`` nor each other backwards. ``acceltcp/__init__.py`` is above everything.

Today's upward imports are listed in ``ALLOWED`` with the issue that removes them; the
test fails on any import not allowed there, and on an allowed one that is gone (so the
list only shrinks). No module imports a private name (``_x``) of another package
either (``private_imports``). The checker is plain ``ast``: no new dependency.
"""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "acceltcp"

LAYERS = {
    "wire": 0,
    "tcp": 1,
    "io": 2,
    "nic": 3, "host": 3,
    "apps": 4,
    "serve": 5, "eval": 5, "testbed": 5,
    "cli": 6,
    "__init__": 7,
}
# Same-layer imports that are part of the design (importer -> imported): no cycle.
PEERS = {("eval", "serve"), ("eval", "testbed"), ("serve", "testbed")}

# Today's upward imports: (importing module, imported package) -> why it is there.
# Each is to go with the issue named; the test then asks for the entry to be removed.
ALLOWED = {
    # (empty: issue 13 moved SYN cookies to tcp/syncookie.py, a splice's rule computation
    # to wire.control beside L4Rule, SimNicDevice to nic/placements/sim.py and
    # make_pair to testbed/simnet.py, and the progress bar to eval/progress.py)
}


def package_of(rel):
    """'tcp/seq.py' -> 'tcp'; 'cli.py' -> 'cli'; '__init__.py' -> '__init__'."""
    head = rel.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def imported_packages(source, rel):
    """The acceltcp packages a module imports: {(package, line)}."""
    tree = ast.parse(source)
    parts = rel[:-3].split("/")           # module path inside acceltcp, without .py
    if parts[-1] == "__init__":
        parts = parts[:-1]
    here = parts[:-1] if rel.endswith(".py") and not rel.endswith("__init__.py") else parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                mod = base + (node.module.split(".") if node.module else [])
                if not mod:                              # from . import x (top level)
                    out.update((a.name, node.lineno) for a in node.names)
                    continue
                out.add((mod[0], node.lineno))
            elif node.module and (node.module == "acceltcp" or
                                  node.module.startswith("acceltcp.")):
                mod = node.module.split(".")[1:]
                if mod:
                    out.add((mod[0], node.lineno))
                else:
                    out.update((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("acceltcp."):
                    out.add((a.name.split(".")[1], node.lineno))
    return out


def private_imports(source, rel):
    """Private names (``_x``, not ``__x__``) a module imports from another acceltcp package:
    [(rel, "pkg.mod", name, line)]. A leading underscore means "this package's own": a
    helper another package needs belongs in a public module (issue 13)."""
    tree = ast.parse(source)
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    here = parts[:-1] if not rel.endswith("__init__.py") else parts
    pkg = package_of(rel)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
            mod = base + (node.module.split(".") if node.module else [])
        elif node.module and node.module.startswith("acceltcp."):
            mod = node.module.split(".")[1:]
        else:
            continue
        for a in node.names:
            target = mod or [a.name]
            if target[0] == pkg:
                continue
            if a.name.startswith("_") and not a.name.startswith("__"):
                out.append((rel, ".".join(mod), a.name, node.lineno))
    return out


def violations(modules):
    """Upward imports in {rel path: source}: [(rel, imported package, line)]."""
    bad = []
    for rel, source in sorted(modules.items()):
        pkg = package_of(rel)
        level = LAYERS[pkg]
        for target, line in sorted(imported_packages(source, rel)):
            if target == pkg or target not in LAYERS:
                continue
            t = LAYERS[target]
            if t < level or (t == level and (pkg, target) in PEERS):
                continue
            bad.append((rel, target, line))
    return bad


def sources():
    return {p.relative_to(SRC).as_posix(): p.read_text() for p in SRC.rglob("*.py")}


def test_every_package_has_a_layer():
    assert {package_of(rel) for rel in sources()} <= set(LAYERS)


def test_no_new_upward_import():
    found = violations(sources())
    new = [v for v in found if (v[0], v[1]) not in ALLOWED]
    assert not new, "upward imports (layers: %s): %s" % (LAYERS, new)
    gone = set(ALLOWED) - {(rel, target) for rel, target, _ in found}
    assert not gone, "fixed -- remove from ALLOWED: %s" % sorted(gone)


@pytest.mark.parametrize("rel,source,target", [
    ("tcp/evil.py", "from ..host import stack\n", "host"),
    ("wire/evil.py", "from acceltcp.tcp.seq import seq_lt\n", "tcp"),
    ("nic/evil.py", "import acceltcp.apps.echo\n", "apps"),
    ("host/evil.py", "def f():\n    from ..apps import echo\n", "apps"),   # inside a function
    ("apps/evil.py", "from ..serve.commands import run\n", "serve"),
    ("eval/evil.py", "from .. import cli\n", "cli"),
    ("host/evil.py", "from ..nic import teardown\n", "nic"),        # same layer, not a peer
    # entries removed from ALLOWED stay caught:
    ("host/stack.py", "from ..nic.syncookie import SynCookieJar\n", "nic"),
    ("eval/bench.py", "def main(args):\n    from ..cli import _progress\n", "cli"),
    ("host/simnet.py", "from ..nic.dataplane import HOST, WIRE, NicDataplane\n", "nic"),
    ("host/offload.py", "from ..nic.splice import SpliceSide, splice_rules\n", "nic"),
])
def test_checker_catches_an_upward_import(rel, source, target):
    (v,) = violations({rel: source})
    assert v[:2] == (rel, target)


def test_checker_allows_downward_and_own_package():
    mods = {"apps/ok.py": "from ..host import stack\nfrom ..tcp.seq import seq_lt\n"
                          "from . import echo\nimport acceltcp.wire.tcp\n",
            "tcp/sub/ok.py": "from ... import wire\nfrom ..seq import seq_lt\n",
            "cli.py": "from .serve import commands\nfrom acceltcp.eval import bench\n"}
    assert violations(mods) == []


def test_no_private_name_imported_across_packages():
    found = [v for rel, source in sorted(sources().items())
             for v in private_imports(source, rel)]
    assert not found, "private names imported from another package: %s" % found


@pytest.mark.parametrize("rel,source,found", [
    ("eval/evil.py", "def f():\n    from ..serve.commands import _tap_host\n",
     ("serve.commands", "_tap_host")),
    ("apps/evil.py", "from acceltcp.host.stack import _helper\n", ("host.stack", "_helper")),
    ("cli.py", "from .eval.bench import _median\n", ("eval.bench", "_median")),
])
def test_checker_catches_a_private_import(rel, source, found):
    ((r, mod, name, _),) = private_imports(source, rel)
    assert (r, mod, name) == (rel,) + found


def test_checker_allows_private_names_inside_a_package():
    mods = {"apps/kv/engine.py": "from ..resp import bulk as _bulk\nfrom . import _x\n",
            "serve/commands.py": "from .common import tap_host\nfrom ._priv import _y\n",
            "nic/xdp/control.py": "from ..dataplane import _reverse_key\n"
                                  "from ...wire.control import __all__\n"}
    assert [v for rel, src in mods.items() for v in private_imports(src, rel)] == []
