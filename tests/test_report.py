"""The HTML report: one self-contained page from `optimize --report` or `graphopt report RESULT.json`, with sections
only for what the run did, loaded in a real headless Chromium without console errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CNN = FIXTURES / "cnn.onnx"
FULL = [
    "--prune-channels", "0.5", "--prune-bench", "0",
    "--quantize", "int8", "--calib-random", "2", "--calib-cache", "off", "--exclude-op", "Gemm",
]  # fmt: skip


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphopt", *argv], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """One optimize run that prunes and quantizes: its --report page and its --json summary."""
    folder = tmp_path_factory.mktemp("report")
    html = folder / "report.html"
    result = _cli("optimize", str(CNN), "-o", str(folder / "out.onnx"), *FULL, "--report", str(html), "--json")
    assert result.returncode == 0, result.stderr
    (folder / "result.json").write_text(result.stdout)
    return html, json.loads(result.stdout), folder


def test_report_has_every_section_with_its_data(full_run) -> None:
    html_path, summary, _ = full_run
    page = html_path.read_text()
    for title in ("Passes", "Op histogram", "Int8 quantization", "Layers: mode and why", "Pruning (channels)"):
        assert f">{title}" in page, title
    assert page.count("<svg") >= 5  # pass times, ops, SQNR, channels, MACs
    # the numbers come from the run
    assert f"{summary['nodes_before']} → {summary['nodes_written']}" in page
    q = summary["quantization"]
    worst = min((x for x in q["layers"] if x["sqnr_db"] is not None), key=lambda x: x["sqnr_db"])
    best = max((x for x in q["layers"] if x["sqnr_db"] is not None), key=lambda x: x["sqnr_db"])
    sqnr = page.split(">Int8 quantization")[1]
    assert sqnr.index(f">{worst['name']}<") < sqnr.index(f">{best['name']}<")  # worst first
    assert "head/Gemm" in sqnr.split(">Layers: mode and why")[1] and "--exclude-op Gemm" in page
    for op, n in summary["ops_after"].items():
        assert re.search(rf">{re.escape(op)}</text>", page) and str(n) in page
    prune = page.split(">Pruning (channels)")[1]
    assert "16 → 8" in prune and "MACs" in prune


def test_winograd_section_from_the_pass_decisions(tmp_path: Path) -> None:
    html = tmp_path / "w.html"
    result = _cli("optimize", str(CNN), "-o", str(tmp_path / "w.onnx"), "--winograd", "F2", "--report", str(html))
    assert result.returncode == 0, result.stderr
    section = html.read_text().split(">Winograd decisions")[1]
    assert section.count("F2 (forced)") == 3 and "stem/Conv" in section and "16x32x32-&gt;16" in section


def test_report_is_self_contained(full_run) -> None:
    page = full_run[0].read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, flags=re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page, flags=re.I)
    assert "@import" not in page
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing


def test_report_command_from_json_gives_the_same_page(full_run) -> None:
    html_path, _, folder = full_run
    out = folder / "again.html"
    result = _cli("report", str(folder / "result.json"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text() == html_path.read_text()


def test_sections_appear_only_with_their_data(tmp_path: Path) -> None:
    html = tmp_path / "plain.html"
    result = _cli("optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--report", str(html), "-q")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    page = html.read_text()
    assert ">Passes" in page and ">Op histogram" in page
    for absent in ("Int8 quantization", "Pruning", "Winograd"):
        assert f">{absent}" not in page


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "cannot read"), ("not json", "not JSON"), ('{"a": 1}', "not the output of graphopt optimize --json")],
)
def test_report_command_bad_input(tmp_path: Path, content: str | None, needle: str) -> None:
    src = tmp_path / "r.json"
    if content is not None:
        src.write_text(content)
    result = _cli("report", str(src), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: ") and needle in lines[0] and str(src) in lines[0]
    assert not (tmp_path / "r.html").exists()


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _headless(browser: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", *extra, url,
            ],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


def _console_errors(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Refused" in line or ":ERROR:" in line or "Error" in line)
    ]


@pytest.mark.slow
def test_report_in_headless_chromium(full_run, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("GRAPHOPT_REQUIRE_CHROMIUM"):  # .ci/run installs it: a missing browser must not pass
            pytest.fail("GRAPHOPT_REQUIRE_CHROMIUM is set but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    html_path = full_run[0]
    # the check can fail: a page with a script error and a blocked remote image is caught
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'\"><script>nosuchfunction()</script><p>x</p>"
    )
    assert _console_errors(_headless(browser, bad.as_uri(), "--dump-dom").stderr)

    dom = _headless(browser, html_path.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    assert dom.stdout.count("<svg") >= 5 and "Int8 quantization" in dom.stdout  # the page the browser built

    shot = tmp_path / "report.png"
    result = _headless(browser, html_path.as_uri(), f"--screenshot={shot}", "--window-size=1100,1600")
    assert result.returncode == 0 and not _console_errors(result.stderr)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # charts drawn, not a blank page


@pytest.mark.parametrize("where", ["input", "output", "missing folder", "directory"])
def test_report_path_is_checked_before_anything_is_written(tmp_path: Path, where: str) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(CNN.read_bytes())
    out = tmp_path / "o.onnx"
    page = {"input": src, "output": out, "missing folder": tmp_path / "no" / "r.html", "directory": tmp_path}[where]
    result = _cli("optimize", str(src), "-o", str(out), "--report", str(page))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: ") and str(page) in lines[0]
    assert not out.exists() and src.read_bytes() == CNN.read_bytes()


def test_report_command_reads_stdin(full_run, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from graphopt.cli import main

    _, summary, folder = full_run
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(summary)))
    assert main(["report", "-", "-o", str(folder / "stdin.html")]) == 0
    assert (folder / "stdin.html").read_text() == full_run[0].read_text()


def test_report_names_the_worst_part_of_the_output_error(full_run, tmp_path: Path) -> None:
    """When one part's own error is the worst (a Concat input's slice, one of several outputs), the page says which
    and gives the pooled figure, as the terminal summary does; without a part the line is as before."""
    import copy

    from graphopt.tools.report import write_report

    summary = copy.deepcopy(full_run[1])  # the module's run stays as the other tests read it
    q = summary["quantization"]
    plain = tmp_path / "plain.html"
    write_report(summary, plain)
    assert "worst part" not in plain.read_text()
    q["output_error_part"], q["output_pooled_sqnr_db"] = "y[:, 4:6] (Concat input 2)", 42.25
    page = tmp_path / "part.html"
    write_report(summary, page)
    assert "(worst part: y[:, 4:6] (Concat input 2); pooled over all: SQNR 42.2 dB)" in page.read_text()
