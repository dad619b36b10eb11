"""`acceltcp demo`: four rows (persistent, short-lived, + setup, + setup + teardown), the
rate of one simulated host core, within 80 columns; the host's frames per transaction
fall with each offload (the mechanism, not a speed)."""

import re

from acceltcp.cli import main


def test_demo_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["demo", "--clients", "8", "--transactions", "400"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "core txn/s" in out and "host µs/txn" in out
    frames = {}
    for label in ("persistent", "short-lived", "+ setup offload", "+ setup + teardown"):
        row = next(line for line in out.splitlines()
                   if line.startswith("│ " + label + " "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert re.fullmatch(r"[\d,]+", cells[1]) and cells[4] == "0"
        frames[label] = float(cells[2])
    assert frames["persistent"] < frames["short-lived"]
    assert frames["short-lived"] > frames["+ setup offload"] > frames["+ setup + teardown"]
