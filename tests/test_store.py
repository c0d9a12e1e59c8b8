"""The results store: round trips, atomic cells, concurrent writers, and files it must refuse."""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlens.runs.store import SCHEMA_VERSION, Store, StoreError


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    return {
        "w": w,
        "w_t": w.T,  # non-contiguous view sharing memory with "w"
        "tied": w,  # the same tensor twice, as with tied weights
        "b": torch.randn(4, generator=g),
        "steps": torch.tensor([3, 1, 2], dtype=torch.int64),
        "half": torch.randn(2, 2, generator=g).to(torch.bfloat16),
    }


def _small_store(path: Path, n: int = 20) -> None:
    with Store(path) as s:
        run = s.begin_run("e1", {"n": n})
        keys = [f"cell{i:03d}" for i in range(n)]
        s.set_run_cells(run, keys)
        for i, k in enumerate(keys):
            s.record_cell(k, "train", {"i": i, "pad": "x" * 200}, results=[("acc", "", i / n), ("loss", "test", 1.0)])
        s.finish_run(run, "done")


def test_round_trip_through_a_reopened_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "runs.db"
    cfg = {"seeds": [0, 1], "model": {"kind": "mlp", "hidden": [16]}, "eps": 0.25}
    pred = np.arange(12, dtype=np.int16).reshape(3, 4)
    margins = np.random.default_rng(0).standard_normal(7).astype(np.float32)
    state = _state(0)
    with Store(path) as s:
        assert s.path == path and s.artifact_root == path.parent / "artifacts"
        r1 = s.begin_run("e2", cfg, out_dir="out/e2", environment={"threads": 1})
        assert r1.startswith("e2-") and len(r1.split("-")[-1]) == 4
        s.set_run_cells(r1, ["k-train", "k-fail", "k-later"])
        s.record_cell(
            "k-train", "train", {"model": "mlp", "seed": 0},
            results=[("acc", "", 0.875), ("alpha1", "a_to_b", 0.25), ("alpha1", "b_to_a", np.float32(0.5))],
            payload={"history": [1.5, 0.5], "n": np.int64(3)},
            arrays={"pred": pred, "margins": margins},
            weights={"weights": state, "init": {"x": torch.zeros(2)}},
            started=1000.0, seconds=2.5,
        )
        s.record_cell("k-fail", "e2.measure", {"pair": [0, 1]}, status="failed", error="RuntimeError: boom")
        s.finish_run(r1, "done")
        r2 = s.begin_run("e2", {"seeds": [0]})
        r3 = s.begin_run("e1", cfg)

    with Store(path) as s:  # everything comes back from the file, through a new connection
        cell = s.cell("k-train")
        assert cell is not None
        assert cell["key"] == "k-train" and cell["kind"] == "train" and cell["status"] == "done"
        assert cell["spec"] == {"model": "mlp", "seed": 0}
        assert cell["payload"] == {"history": [1.5, 0.5], "n": 3}
        assert cell["started"] == 1000.0 and cell["seconds"] == 2.5 and cell["finished"] >= cell["started"]
        assert cell["torch_version"] == torch.__version__ and cell["library_version"] and cell["error"] is None
        assert s.results("k-train") == [("acc", "", 0.875), ("alpha1", "a_to_b", 0.25), ("alpha1", "b_to_a", 0.5)]
        assert s.results_dict("k-train") == {"acc": 0.875, "alpha1_a_to_b": 0.25, "alpha1_b_to_a": 0.5}
        for name, expected in (("pred", pred), ("margins", margins)):
            got = s.load_array("k-train", name)
            assert got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)
        loaded = s.load_weights("k-train")
        assert loaded.keys() == state.keys()
        for name, t in state.items():
            assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
        assert torch.equal(s.load_weights("k-train", "init")["x"], torch.zeros(2))
        assert (path.parent / "artifacts" / "k-" / "k-train" / "weights.safetensors").is_file()
        assert {a["name"] for a in s.artifacts("k-train")} == {"pred", "margins", "weights", "init"}

        failed = s.cell("k-fail")
        assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom" and failed["payload"] is None
        assert s.cell("k-later") is None and s.results("k-later") == []
        assert s.done_keys(["k-train", "k-fail", "k-later", "unknown"]) == {"k-train"}

        run = s.run(r1)
        assert run["experiment"] == "e2" and run["config"] == cfg and run["status"] == "done"
        assert run["finished"] is not None and run["finished"] >= run["created"]
        assert run["out_dir"] == "out/e2" and run["environment"] == {"threads": 1}
        assert run["torch_version"] == torch.__version__
        assert (run["n_cells"], run["n_done"], run["n_failed"]) == (3, 1, 1)
        assert s.run(r2)["status"] == "running" and s.run(r2)["n_cells"] == 0
        assert [r["run_id"] for r in s.runs()] == [r3, r2, r1]
        assert s.latest_run()["run_id"] == r3 and s.latest_run("e2")["run_id"] == r2
        assert s.latest_run("e9") is None
        reordered = {"eps": 0.25, "model": {"hidden": [16], "kind": "mlp"}, "seeds": (0, 1)}
        assert s.find_run("e2", reordered)["run_id"] == r1
        assert s.find_run("e1", cfg)["run_id"] == r3
        assert s.find_run("e2", {**cfg, "eps": 0.5}) is None

        rows = s.run_results(r1)
        assert [(r["cell_key"], r["kind"], r["metric"], r["direction"], r["value"]) for r in rows] == [
            ("k-train", "train", "acc", "", 0.875),
            ("k-train", "train", "alpha1", "a_to_b", 0.25),
            ("k-train", "train", "alpha1", "b_to_a", 0.5),
        ]
        assert {r["run_id"] for r in rows} == {r1}

        # recording a key again replaces its rows and its artifacts
        old_pred = path.parent / "artifacts" / "k-" / "k-train" / "pred.npy"
        assert old_pred.is_file()
        s.record_cell("k-train", "train", {"model": "mlp", "seed": 0}, results=[("acc", "", 0.5)],
                      weights={"weights": {"w": torch.ones(2)}})
        s.record_cell("k-fail", "e2.measure", {"pair": [0, 1]}, results=[("alpha1", "a_to_b", 0.125)])
    with Store(path) as s:
        assert s.results("k-train") == [("acc", "", 0.5)]
        assert s.cell("k-train")["payload"] is None
        assert torch.equal(s.load_weights("k-train")["w"], torch.ones(2))
        assert list(s.load_weights("k-train")) == ["w"]
        with pytest.raises(StoreError, match="no array named 'pred'|no array artifacts"):
            s.load_array("k-train", "pred")
        assert not old_pred.exists()
        assert s.cell("k-fail")["status"] == "done" and s.cell("k-fail")["error"] is None
        assert s.done_keys(["k-train", "k-fail"]) == {"k-train", "k-fail"}
        assert (s.run(r1)["n_done"], s.run(r1)["n_failed"]) == (2, 0)
        s.set_run_cells(r1, ["k-fail"])  # replaces the membership
        assert s.run(r1)["n_cells"] == 1 and [r["cell_key"] for r in s.run_results(r1)] == ["k-fail"]


def test_resume_keeps_the_run_and_refuses_another_config(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.db") as s:
        rid = s.begin_run("e1", {"a": 1}, run_id="mine")
        created = s.run(rid)["created"]
        s.finish_run(rid, "interrupted")
        assert s.run(rid)["status"] == "interrupted"
        assert s.begin_run("e1", {"a": 1}, run_id="mine") == "mine"
        again = s.run("mine")
        assert again["status"] == "running" and again["created"] == created and again["finished"] is None
        assert len(s.runs()) == 1
        with pytest.raises(StoreError, match="another config"):
            s.begin_run("e1", {"a": 2}, run_id="mine")
        with pytest.raises(StoreError, match="belongs to experiment e1, not e2"):
            s.begin_run("e2", {"a": 1}, run_id="mine")
        with pytest.raises(ValueError, match="status"):
            s.finish_run("mine", "finished")


def test_unknown_run_lists_known_ids(tmp_path: Path) -> None:
    with Store(tmp_path / "study.db") as s:
        with pytest.raises(StoreError, match="no runs yet"):
            s.run("nope")
        ids = [s.begin_run("e1", {"i": i}, run_id=f"run{i:02d}") for i in range(12)]
        with pytest.raises(StoreError) as info:
            s.run("nope")
        msg = str(info.value)
        assert "study.db" in msg and "'nope'" in msg and "and 2 more" in msg
        assert sum(i in msg for i in ids) == 10 and "run11" in msg and "run00" not in msg
        for call in (lambda: s.finish_run("nope", "done"), lambda: s.set_run_cells("nope", []),
                     lambda: s.run_results("nope")):
            with pytest.raises(StoreError, match="no run 'nope'"):
                call()


def test_missing_values_are_null_and_nan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with Store(path) as s:
        s.record_cell("k", "e2.measure", {}, results=[("alpha", "a_to_b", None), ("acc", "", 1)])
        assert s.results("k") == [("alpha", "a_to_b", None), ("acc", "", 1.0)]
        assert s.results_dict("k") == {"alpha_a_to_b": None, "acc": 1.0}
        for bad in (float("nan"), float("inf"), np.float32("nan"), torch.tensor(float("-inf"))):
            with pytest.raises(StoreError, match="NaN"):
                s.record_cell("bad", "e2.measure", {}, results=[("acc", "", 0.5), ("alpha", "", bad)])
        with pytest.raises(StoreError, match="number or None"):
            s.record_cell("bad", "e2.measure", {}, results=[("alpha", "", "0.5")])
        with pytest.raises(StoreError, match="twice"):
            s.record_cell("bad", "e2.measure", {}, results=[("alpha", "", 0.5), ("alpha", "", 0.25)])
        assert s.cell("bad") is None
    raw = sqlite3.connect(path)
    try:
        rows = raw.execute("SELECT metric, value, typeof(value) FROM results ORDER BY rowid").fetchall()
    finally:
        raw.close()
    assert rows == [("alpha", None, "null"), ("acc", 1.0, "real")]


@pytest.mark.parametrize("fail_in", ["_replace_results", "_replace_artifacts"])
def test_a_failure_inside_the_transaction_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_in: str
) -> None:
    path = tmp_path / "runs.db"
    with Store(path) as s:
        s.record_cell("old", "train", {"v": 1}, results=[("acc", "", 0.75)], payload={"v": 1})

        def crash(*args: object) -> None:
            raise RuntimeError("killed mid-transaction")

        monkeypatch.setattr(Store, fail_in, crash)
        with pytest.raises(RuntimeError, match="killed"):
            s.record_cell("new", "train", {"v": 2}, results=[("acc", "", 0.5)], weights={"weights": _state(1)})
        with pytest.raises(RuntimeError, match="killed"):
            s.record_cell("old", "train", {"v": 2}, results=[("acc", "", 0.5)], payload={"v": 2}, status="failed",
                          error="x")
        # the same connection, after the rollback
        assert s.cell("new") is None and s.results("new") == [] and s.artifacts("new") == []
        assert s.done_keys(["new", "old"]) == {"old"}
        monkeypatch.undo()
    with Store(path) as s:  # and a fresh one
        assert s.cell("new") is None and s.results("new") == [] and s.artifacts("new") == []
        old = s.cell("old")
        assert old["status"] == "done" and old["spec"] == {"v": 1} and old["payload"] == {"v": 1}
        assert s.results("old") == [("acc", "", 0.75)]


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from transferlens.runs.store import Store

    def write(path, tag, die_at_end):
        Path(f"{path}.ready-{tag}").touch()
        deadline = time.monotonic() + 120
        while not all(Path(f"{path}.ready-{t}").exists() for t in ("a", "b")):  # start together
            assert time.monotonic() < deadline, "the other writer never started"
            time.sleep(0.002)
        s = Store(path)  # both processes may create the new file at the same moment
        run = s.begin_run("e-" + tag, {"tag": tag})
        keys = [f"{tag}{i:03d}" for i in range(100)]
        s.set_run_cells(run, keys + ["shared"])
        other = "b" if tag == "a" else "a"
        for i, k in enumerate(keys):
            if i == 50:  # halfway: wait for the other writer's first half, so that the second halves overlap
                while not s.done_keys([f"{other}049"]):
                    assert time.monotonic() < deadline, "the other writer stalled"
                    time.sleep(0.001)
                s.record_cell("shared", "train", {"shared": True}, results=[("acc", "", 1.0)])
            s.record_cell(k, "train", {"i": i}, results=[("acc", "", i / 100), ("alpha", "a_to_b", None)],
                          payload={"tag": tag})
        s.finish_run(run, "done")
        if die_at_end:  # die in the middle of a transaction, as a killed process does
            def die(*args):
                sys.stderr.flush()
                os._exit(17)
            Store._replace_results = die
            s.record_cell(tag + "-killed", "train", {}, results=[("acc", "", 0.0)])
        s.close()
    """
)


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    """This process and a child write 100 cells each into one new store; the child is then killed
    inside a transaction. Nothing committed is lost, nothing uncommitted is visible."""
    path = tmp_path / "shared.db"  # does not exist yet
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER + "\nwrite(sys.argv[1], 'b', True)\n", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        namespace: dict = {}
        exec(_WRITER, namespace)
        namespace["write"](str(path), "a", False)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert (child.returncode, err) == (17, "")  # killed on purpose inside its last transaction
    with Store(path) as s:  # opens cleanly: the killed writer left no lock and no damage
        keys = [f"{t}{i:03d}" for t in "ab" for i in range(100)]
        assert s.done_keys(keys + ["shared"]) == set(keys) | {"shared"}
        assert s.results("a042") == [("acc", "", 0.42), ("alpha", "a_to_b", None)]
        assert s.cell("b099")["payload"] == {"tag": "b"}
        assert s.cell("b-killed") is None and s.results("b-killed") == []
        runs = s.runs()
        assert sorted(r["experiment"] for r in runs) == ["e-a", "e-b"]
        assert all((r["status"], r["n_cells"], r["n_done"]) == ("done", 101, 101) for r in runs)
        # each writer read the other's commits halfway, so their writes did interleave
        finished = {t: [s.cell(f"{t}{i:03d}")["finished"] for i in range(100)] for t in "ab"}
        assert max(finished["a"][:50]) < min(finished["b"][50:]) and max(finished["b"][:50]) < min(finished["a"][50:])


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a closed store holding 200 cells (schema and meta pages first, data after them)."""
    path = tmp_path_factory.mktemp("real") / "runs.db"
    _small_store(path, n=200)
    return path.read_bytes()


def _truncate(fraction_or_size: float | int):
    def make(path: Path, data: bytes) -> None:
        n = int(len(data) * fraction_or_size) if isinstance(fraction_or_size, float) else fraction_or_size
        path.write_bytes(data[:n])

    return make


def _scribble(page_from_end: int):
    """Overwrite one page with garbage: the file keeps its size, its schema and meta stay readable."""

    def make(path: Path, data: bytes) -> None:
        page = int.from_bytes(data[16:18], "big")  # the page size, from the SQLite header
        assert len(data) >= (page_from_end + 4) * page
        start = len(data) - page_from_end * page
        path.write_bytes(data[:start] + b"\x5a" * page + data[start + page :])

    return make


def _text_file(path: Path, data: bytes) -> None:
    path.write_text("metric,value\nacc,0.5\n" * 20)


def _other_application(path: Path, data: bytes) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE foo (x INTEGER)")
    con.execute("INSERT INTO foo VALUES (1)")
    con.commit()
    con.close()


def _other_application_with_meta(path: Path, data: bytes) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.commit()
    con.close()


def _newer_schema(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("make", "todo"),
    [
        (_text_file, "pass the path of a results store"),
        (_truncate(0.5), "restore it from a backup"),
        (_truncate(0.9), "restore it from a backup"),
        (_truncate(100), "restore it from a backup"),
        (_truncate(40), "restore it from a backup"),
        (_scribble(20), "restore it from a backup"),
        (_scribble(2), "restore it from a backup"),
        (_other_application, "another application"),
        (_other_application_with_meta, "another application"),
        (_newer_schema, "upgrade transferlens"),
    ],
    ids=[
        "text", "half", "90-percent", "100-bytes", "40-bytes", "garbage-page", "garbage-late-page", "other-app",
        "other-app-meta", "newer-schema",
    ],
)
@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
def test_unusable_files_are_refused_with_what_to_do(
    tmp_path: Path, real_store: bytes, make, todo: str, readonly: bool
) -> None:
    path = tmp_path / "my-study.db"
    make(path, real_store)
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(path, readonly=readonly)
    msg = str(info.value)
    assert "my-study.db" in msg and todo in msg, msg
    if "newer" in todo or "upgrade" in todo:
        assert "newer transferlens" in msg and "999" in msg
    assert path.read_bytes() == before  # refused files are left exactly as they were


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.touch()
    with pytest.raises(StoreError, match="is empty"):
        Store(path, readonly=True)
    with Store(path) as s:
        s.record_cell("k", "train", {}, results=[("acc", "", 0.5)])
    con = sqlite3.connect(path)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()
    assert meta["application"] == "transferlens" and meta["schema_version"] == str(SCHEMA_VERSION)
    assert mode == "wal"
    with Store(path) as s:
        assert s.results("k") == [("acc", "", 0.5)]


def test_readonly_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with pytest.raises(StoreError, match="does not exist"):
        Store(path, readonly=True)
    assert not path.exists()
    _small_store(path, n=3)
    with Store(path) as writer, Store(path, readonly=True) as reader:
        assert reader.done_keys(["cell000", "cell001", "cell002"]) == {"cell000", "cell001", "cell002"}
        writer.record_cell("late", "train", {}, results=[("acc", "", 0.5)])
        assert reader.results("late") == [("acc", "", 0.5)]  # sees what another connection committed
        for write in (lambda: reader.begin_run("e1", {}), lambda: reader.record_cell("x", "train", {}),
                      lambda: reader.finish_run(reader.latest_run()["run_id"], "done")):
            with pytest.raises(StoreError, match="read-only"):
                write()
    assert Store(path, readonly=True).cell("x") is None


def test_deleted_or_damaged_artifacts(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.db") as s:
        s.record_cell("k", "train", {}, arrays={"pred": np.zeros(3)}, weights={"weights": _state(2)})
        (tmp_path / "artifacts" / "k" / "k" / "weights.safetensors").unlink()
        with pytest.raises(StoreError, match="was deleted; rerun the experiment with --fresh"):
            s.load_weights("k")
        (tmp_path / "artifacts" / "k" / "k" / "pred.npy").write_bytes(b"garbage")
        with pytest.raises(StoreError, match="unreadable.*--fresh"):
            s.load_array("k", "pred")
        with pytest.raises(StoreError, match="no weights named 'other'"):
            s.load_weights("k", "other")
        with pytest.raises(StoreError, match="never recorded"):
            s.load_weights("missing")


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.db") as s:
        with pytest.raises(StoreError, match="folder"):
            s.record_cell("../escape", "train", {}, arrays={"x": np.zeros(1)})
        with pytest.raises(StoreError, match="file"):
            s.record_cell("k", "train", {}, arrays={"../x": np.zeros(1)})
        with pytest.raises(StoreError, match="dtype object"):
            s.record_cell("k", "train", {}, arrays={"x": np.array([{}, 1], dtype=object)})
        with pytest.raises(StoreError, match="distinct names"):
            s.record_cell("k", "train", {}, arrays={"w": np.zeros(1)}, weights={"w": {"a": torch.zeros(1)}})
        with pytest.raises(StoreError, match="JSON"):
            s.record_cell("k", "train", {"f": object()})
        with pytest.raises(StoreError, match="JSON"):
            s.begin_run("e1", {"eps": float("nan")})
        with pytest.raises(ValueError, match="status"):
            s.record_cell("k", "train", {}, status="ok")
        with pytest.raises(ValueError, match="seconds"):
            s.record_cell("k", "train", {}, seconds=-1.0)
        with pytest.raises(StoreError, match="single string"):
            s.done_keys("abc")
        assert s.cell("k") is None and s.runs() == []
        assert not (tmp_path / "artifacts").exists()
    with pytest.raises(StoreError, match="closed"):
        s.cell("k")
    with pytest.raises(ValueError, match="timeout"):
        Store(tmp_path / "runs.db", timeout=-1)
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_a_locked_store_waits_then_says_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with Store(path) as s:
        rid = s.begin_run("e1", {})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        with Store(path, timeout=0.2) as s:
            with pytest.raises(StoreError, match="another process holds the store"):
                s.finish_run(rid, "done")
            assert s.run(rid)["status"] == "running"  # reads are not blocked by a writer
        holder.execute("COMMIT")
    finally:
        holder.close()
    with Store(path, timeout=0.2) as s:
        s.finish_run(rid, "done")
        assert s.run(rid)["status"] == "done"


def test_a_write_waits_for_another_writer_to_finish(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with Store(path) as s:
        rid = s.begin_run("e1", {})
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE runs SET out_dir = 'held' WHERE run_id = ?", (rid,))
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with Store(path, timeout=30) as s:
            s.finish_run(rid, "interrupted")  # blocks until the holder commits, then goes through
            run = s.run(rid)
        assert run["status"] == "interrupted" and run["out_dir"] == "held"
    finally:
        release.join()
        holder.close()


def test_one_store_shared_by_threads(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.db") as s, Store(tmp_path / "runs.db", readonly=True) as reader:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(50):
                    rows = [(f"m{j}", "", i / 50) for j in range(5)]
                    s.record_cell(f"t{t}-{i}", "train", {"t": t, "i": i}, results=rows)
                    assert s.results(f"t{t}-{i}") == rows and reader.results(f"t{t}-{i}") == rows
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often, so that calls really interleave
        try:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            sys.setswitchinterval(interval)
        assert errors == []
        assert len(s.done_keys(f"t{t}-{i}" for t in range(4) for i in range(50))) == 200


def test_a_store_sent_to_another_process_reopens_its_file(tmp_path: Path) -> None:
    with Store(tmp_path / "runs.db", timeout=5) as s:
        s.record_cell("k", "train", {}, results=[("acc", "", 0.5)])
        copy = pickle.loads(pickle.dumps(s))
    with copy:
        assert copy.path == s.path and copy.timeout == 5 and copy.results("k") == [("acc", "", 0.5)]
