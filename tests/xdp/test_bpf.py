"""The bpf(2) layer and the loader: load, pin, maps, test-run, and nothing left behind."""

import os
import struct
import subprocess
import time

import pytest

from acceltcp.nic.xdp import bpf

MAC = bytes.fromhex("020000000001")


def _ids(kind):
    out = subprocess.run(["bpftool", kind, "show"], capture_output=True, text=True).stdout
    return {int(line.split(":")[0]) for line in out.splitlines()
            if line[:1].isdigit() and " name atcp_" in line}


def _freed(ids, kind):
    """True once none of `ids` is listed: the kernel frees programs and maps after the last
    reference, maps after an RCU grace period from a work queue (bounded wait, 30 s)."""
    for _ in range(600):
        if not ids & _ids(kind):
            return True
        time.sleep(0.05)
    return False


def test_load_names_and_unload_leaves_nothing(xdp_obj):
    with bpf.Loaded(xdp_obj, {"atcp_handed": (bpf.BPF_MAP_TYPE_LRU_HASH, 12, 4, 8)}) as ld:
        assert set(ld.progs) == {"atcp_wire", "atcp_host", "atcp_pass", "atcp_td_wire"}
        assert set(ld.maps) == {"atcp_cfg", "atcp_clock", "atcp_state", "atcp_counters",
                                "atcp_fbuf",
                                "atcp_listen", "atcp_handed", "atcp_lports",
                                # splice.h
                                "atcp_splice", "atcp_sp_rules", "atcp_sp_ctl",
                                "atcp_sp_report", "atcp_sp_scratch",
                                # teardown.h
                                "atcp_td_table", "atcp_td_index", "atcp_td_counters",
                                "atcp_td_clock", "atcp_td_events", "atcp_td_frames",
                                "atcp_td_seq", "atcp_td_data", "atcp_td_work",
                                "atcp_td_jump", "atcp_td_free", "atcp_td_alloc",
                                "atcp_td_hwork", "atcp_handed_ctl"}
        assert ld.maps["atcp_handed"].max_entries == 8          # the premade map was used
        assert ld.maps["atcp_handed"].type == bpf.BPF_MAP_TYPE_LRU_HASH
        prog_ids = {p.id for p in ld.progs.values()}
        map_ids = {m.id for m in ld.maps.values()}
        assert prog_ids <= _ids("prog") and map_ids <= _ids("map")   # bpftool sees them
        pin_dir = ld.dir
        assert sorted(os.listdir(os.path.join(pin_dir, "maps"))) == sorted(ld.maps)
    assert not os.path.exists(pin_dir)
    assert _freed(prog_ids, "prog") and _freed(map_ids, "map")


def test_failed_load_leaves_nothing(tmp_path, xdp_obj):
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"not an ELF object")
    root = bpf.bpffs_root()
    mine = "atcp-%d-" % os.getpid()
    with pytest.raises(bpf.XdpUnavailable, match="refused"):
        bpf.Loaded(str(bad))
    assert not [d for d in os.listdir(root) if d.startswith(mine)]


def test_missing_object_names_what_to_do(tmp_path):
    with pytest.raises(bpf.XdpUnavailable, match="make xdp"):
        bpf.Loaded(str(tmp_path / "nope.bpf.o"))


def test_map_operations(xdp_obj):
    with bpf.Loaded(xdp_obj) as ld:
        m = ld.maps["atcp_listen"]
        k1, k2 = b"\x0a\0\0\x01\x00\x50\0\0", b"\0\0\0\0\x1f\x90\0\0"
        assert m.lookup(k1) is None and m.keys() == []
        m.update(k1, struct.pack("=HBB", 1460, 7, 3))
        m.update(k2, struct.pack("=HBB", 536, 255, 2))
        assert m.lookup(k1) == struct.pack("=HBB", 1460, 7, 3)
        assert sorted(m.keys()) == sorted([k1, k2])
        with pytest.raises(bpf.BpfError):
            m.update(k1, bytes(4), bpf.BPF_NOEXIST)
        assert m.delete(k1) and not m.delete(k1)
        assert m.keys() == [k2]
        c = ld.maps["atcp_counters"]
        assert c.percpu and len(c.lookup(struct.pack("=I", 0))) == bpf.possible_cpus()
        # every index's sum over CPUs in one batch read, as a lookup per index gives it
        ncpu = bpf.possible_cpus()
        for i, v in ((0, 5), (3, 7), (c.max_entries - 1, 1 << 40)):
            c.update(struct.pack("=I", i), [struct.pack("=Q", v + cpu) for cpu in range(ncpu)])
        sums = c.counter_sums()
        assert len(sums) == c.max_entries
        assert sums == [sum(struct.unpack("=Q", x)[0] for x in c.lookup(struct.pack("=I", i)))
                        for i in range(c.max_entries)]
        assert sums[3] == 7 * ncpu + ncpu * (ncpu - 1) // 2 and sums[1] == 0
        with pytest.raises(bpf.BpfError, match="not a per-CPU array"):
            m.counter_sums()


def test_test_run_verdict_and_frame(xdp_obj):
    with bpf.Loaded(xdp_obj) as ld:
        # ARP-ish frame: not IPv4 -> to the host unchanged (cfg.host_ifindex 0: XDP_PASS)
        frame = MAC * 2 + b"\x08\x06" + bytes(46)
        verdict, out, ns = ld.progs["atcp_wire"].test_run(frame)
        assert verdict == bpf.XDP_PASS and out == frame and ns >= 0
        # a forged control frame from the wire is dropped
        verdict, _, _ = ld.progs["atcp_wire"].test_run(MAC * 2 + b"\x09\x0a" + bytes(46))
        assert verdict == bpf.XDP_DROP


def test_a_crashed_loader_is_cleaned_up_by_the_next(xdp_obj, tmp_path):
    """A process that dies with its pins in place: the next load (cleanup_stale) removes
    its directory, and with it the programs and maps."""
    import sys
    code = ("import os, sys; from acceltcp.nic.xdp import bpf; "
            "ld = bpf.Loaded(sys.argv[1]); "
            "print(ld.dir, ld.progs['atcp_wire'].id, flush=True); os._exit(3)")
    r = subprocess.run([sys.executable, "-c", code, xdp_obj], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    pin_dir, prog_id = r.stdout.split()
    assert os.path.isdir(pin_dir) and int(prog_id) in _ids("prog")    # left behind
    assert os.path.basename(pin_dir) in bpf.cleanup_stale()
    assert not os.path.exists(pin_dir) and _freed({int(prog_id)}, "prog")


def test_unavailable_says_what_is_missing(monkeypatch, xdp_obj):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(bpf.XdpUnavailable, match="needs root"):
        bpf.Loaded(xdp_obj)
    monkeypatch.undo()
    monkeypatch.setattr(bpf.shutil, "which", lambda name: None)
    monkeypatch.setattr(bpf.os.path, "exists",
                        lambda p, _e=os.path.exists: False if "bpftool" in p else _e(p))
    with pytest.raises(bpf.XdpUnavailable, match="bpftool not found"):
        bpf.Loaded(xdp_obj)


def test_queue_map_pop_in_order(xdp_obj):
    """Map.pop: a queue map's values come out oldest first; None when empty."""
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_QUEUE, 0, 8, 4, "atcp_test_q")
    q = bpf.Map(fd)
    try:
        assert q.pop() is None
        for i in range(3):
            q.update(b"", i.to_bytes(8, "little"))
        assert [q.pop() for _ in range(4)] == [i.to_bytes(8, "little") for i in range(3)] + [None]
        q.update(b"", bytes(8))
        q.clear()
        assert q.pop() is None
    finally:
        q.close()
    assert q.fd == -1
