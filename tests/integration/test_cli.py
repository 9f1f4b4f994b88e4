"""The ``rtnb`` command, run as a real subprocess: help, argument errors, and each command's job
against real files, scripts and a real Redis server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from integration_helpers import service_or_skip

import rtnb

RTNB = Path(sys.executable).with_name("rtnb")
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def rtnb_cli(*args: str, timeout: float = 300, cwd: Path | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RTNB), *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd)


@pytest.mark.parametrize("command", ["run", "serve", "export", "replay"])
def test_every_command_has_help(command: str) -> None:
    done = rtnb_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: rtnb " + command in " ".join(done.stdout.split())


def test_no_command_shows_the_catalogue() -> None:
    done = rtnb_cli()
    assert done.returncode == 2
    for command in ("run", "serve", "export", "replay"):
        assert command in done.stdout + done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["run", "missing.py"], "script 'missing.py' does not exist"),
    (["run", "pyproject.toml"], "is not a Python script"),
    (["serve", "missing.py"], "app 'missing.py' does not exist"),
    (["serve", "pyproject.toml", "--port", "70000"], "--port must be 1..65535"),
    (["export", "missing.ipynb", "-o", "x.py"], "notebook 'missing.ipynb' does not exist"),
    (["export", "pyproject.toml", "-o", "x.py"], "is not a notebook"),
    (["export", "notebooks/01-quickstart.ipynb"], "Missing option '--output'"),
    (["export", "notebooks/01-quickstart.ipynb", "-o", "x.py", "--max-events", "0"],
     "--max-events must be positive"),
    (["replay", "missing.parquet", "--to", "-"], "data file 'missing.parquet' does not exist"),
    (["replay", "data/metrics.parquet", "--to", "ftp://x"], "--to must be a redis://"),
    (["replay", "data/metrics.parquet", "--to", "redis://127.0.0.1:6379/0"], "--topic is needed"),
    (["replay", "data/metrics.parquet", "--to", "-", "--speed", "-1"], "--speed must be positive"),
    (["replay", "data/metrics.parquet", "--to", "-", "--time", "when"], "no time column 'when'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    done = rtnb_cli(*args, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in " ".join(done.stderr.replace("│", " ").split()), done.stderr


def test_replay_to_stdout_writes_every_row_as_json(tmp_path: Path) -> None:
    df = rtnb.datasets.metrics().iloc[:250]
    df.to_parquet(tmp_path / "few.parquet")
    done = rtnb_cli("replay", str(tmp_path / "few.parquet"), "--to", "-")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 250
    assert [r["cpu"] for r in rows] == df["cpu"].tolist()
    assert "replayed 250 rows" in done.stderr


def test_replay_into_redis_stream() -> None:
    import redis

    service_or_skip(6379, "Redis")
    redis_url = "redis://127.0.0.1:6379/0"
    stream = f"rtnb-cli-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        done = rtnb_cli("replay", str(rtnb.datasets.metrics_path()), "--to", redis_url,
                        "--topic", stream, "--max-events", "1500")
        assert done.returncode == 0, done.stderr
        assert client.xlen(stream) == 1500
        first = json.loads(client.xrange(stream, count=1)[0][1][b"data"])
        expected = rtnb.datasets.metrics().iloc[0]
        assert first["host"] == expected["host"] and first["cpu"] == expected["cpu"]
        assert "delivered 1500" in done.stderr
    finally:
        client.delete(stream)
        client.close()


def test_run_passes_options_to_the_script(tmp_path: Path) -> None:
    src = rtnb.sources.replay(rtnb.datasets.metrics_path(), name="metrics")
    size = rtnb.Param("10s", min="1s", max="5min", name="window")
    src.window(rtnb.tumbling(size), by="host").agg(n=("cpu", "count"))
    script = rtnb.Pipeline(src).export(tmp_path / "monitor.py")
    done = rtnb_cli("run", str(script), "--window", "30s", "--max-events", "3600", "--output",
                    str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    windows = pd.read_parquet(tmp_path / "out" / "metrics_window.parquet")
    assert (windows["window_end"] - windows["window_start"] == pd.Timedelta("30s")).all()
    assert windows["n"].sum() == 3600
    bad = rtnb_cli("run", str(script), "--window", "1h")
    assert bad.returncode == 2 and "window" in bad.stderr


def test_export_names_the_problem_when_the_notebook_fails(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import rtnb\nsrc = rtnb.sources.replay(rtnb.datasets.metrics_path())\n"
        "odd = src.map_batches(lambda df: df)\nsrc.start()")]
    nbformat.write(nb, tmp_path / "lam.ipynb")
    done = rtnb_cli("export", str(tmp_path / "lam.ipynb"), "-o", str(tmp_path / "x.py"),
                    "--max-events", "100")
    assert done.returncode == 1
    assert "ExportError: node 'replay.<lambda>': got a lambda" in done.stderr
    assert not (tmp_path / "x.py").exists()


def test_export_writes_the_dashboard_app_next_to_the_script(tmp_path: Path) -> None:
    """Issue 18: `rtnb export --dashboard` writes the app (where app.py comes from)."""
    done = rtnb_cli("export", str(NOTEBOOKS / "01-quickstart.ipynb"), "-o",
                    str(tmp_path / "monitor.py"), "--dashboard", str(tmp_path / "app.py"),
                    "--max-events", "2000")
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'app.py'}: serve it with `rtnb serve app.py`" in done.stdout
    # progress, cell by cell, on stderr (issue 18: `rtnb export` showed none)
    steps = [line for line in done.stderr.splitlines() if " cell " in line]
    assert steps[0].startswith("rtnb export: 01-quickstart.ipynb cell 1/")
    assert "(100%" in steps[-1] and len(steps) >= 3
    app_text = (tmp_path / "app.py").read_text()
    assert "curdoc" in app_text and "def build" in app_text
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "app.py"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ruff.returncode == 0, ruff.stdout
