"""serve/cores.py without a TAP: the stats merge and the ephemeral port split."""

from acceltcp.serve.cores import ephemeral_range, merge_snapshots


def test_merge_and_ranges():
    a = {"counters": {"x": 1, "y": 2}, "tap": "atcp0", "ok": True, "cpu": {"s": 0.5}}
    b = {"counters": {"x": 3, "z": 4}, "tap": "atcp0", "ok": True, "cpu": {"s": 0.25}}
    m = merge_snapshots([a, b])
    assert m == {"counters": {"x": 4, "y": 2, "z": 4}, "tap": "atcp0", "ok": True,
                 "cpu": {"s": 0.75}}
    rs = [ephemeral_range(k, 3) for k in range(3)]
    assert rs[0][0] == 32768 and rs[-1][1] == 60999
    assert all(rs[i][1] + 1 == rs[i + 1][0] for i in range(2))
