"""Machine limits: cache sizes from sysfs, the cached peak measurement, the roofline."""

import json

import pytest

from playground.build import machine


def fake_sysfs(tmp_path, entries):
    for i, (level, kind, size) in enumerate(entries):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return tmp_path


def test_cache_sizes_parsed(tmp_path):
    root = fake_sysfs(tmp_path, [(1, "Data", "48K"), (1, "Instruction", "32K"),
                                 (2, "Unified", "2048K"), (3, "Unified", "32768K")])
    assert machine.cache_sizes(root) == {"L1": 48 * 1024, "L2": 2 << 20, "L3": 32 << 20}


def test_cache_sizes_defaults_and_this_machine(tmp_path):
    assert machine.cache_sizes(tmp_path / "none") == machine.DEFAULT_CACHES
    sizes = machine.cache_sizes()
    assert sizes["L1"] < sizes["L2"] < sizes["L3"]
    assert machine.parse_size("1M") == 1 << 20


class FakePool:
    def __init__(self):
        self.calls = 0

    def run(self, job, payload, **kw):
        from playground.worker.result import JobResult

        self.calls += 1
        return JobResult("ok", {"gflops": 100.0, "bandwidth_gbs": 20.0})


def test_measure_peak_is_cached(tmp_path):
    path = tmp_path / "machine.json"
    pool = FakePool()
    first = machine.measure_peak(pool, path=path)
    second = machine.measure_peak(pool, path=path)
    assert pool.calls == 1 and first == second and first.ridge == 5.0
    assert machine.machine_key(2) in json.loads(path.read_text())


def test_roofline_figure():
    fig = machine.roofline_figure(100.0, 20.0, [{"name": "fused", "gflops": 30.0,
                                                "intensity": 2.0}])
    assert list(fig.data[1].text) == ["fused"]
    assert max(fig.data[0].y) == 100.0


@pytest.mark.slow
def test_machine_peak_job(pool):
    result = pool.run("machine_peak", {"cores": 2, "triad_mb": 192}, timeout_s=300,
                      exclusive=True)
    assert result.status == "ok", result.message
    assert result.value["gflops"] > 1 and result.value["bandwidth_gbs"] > 0.5
