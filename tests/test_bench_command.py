"""`cardiotwin bench`: argument errors are clear and write nothing (the benchmarks themselves are run
by hand, not in the test suite)."""

from __future__ import annotations

from cardiotwin.cli import main


def test_unknown_benchmark_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "B.md"
    assert main(["bench", "nope", "--file", str(out)]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err and not out.exists()


def test_model_option_only_for_benchmarks_of_a_model(tmp_path, capsys):
    out = tmp_path / "B.md"
    assert main(["bench", "ep", "--model", str(tmp_path), "--file", str(out)]) == 2
    assert "does not measure a model" in capsys.readouterr().err and not out.exists()


def test_seg_benchmark_of_a_missing_bundle_names_it_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "B.md"
    out.write_text("kept\n")
    assert main(["bench", "seg", "--model", str(tmp_path / "no_bundle"), "--file", str(out)]) == 2
    assert "no_bundle: no such folder" in capsys.readouterr().err
    assert out.read_text() == "kept\n"


def test_a_quick_run_writes_its_own_section_and_keeps_the_full_one(tmp_path, monkeypatch):
    """A smoke run (`--quick`) must not replace the full run's measured section."""
    from cardiotwin.commands import bench

    monkeypatch.setattr(bench, "bench_function", lambda name: lambda *, quick: f"## {name} quick={quick}")
    out = tmp_path / "B.md"
    assert main(["bench", "ep", "--file", str(out)]) == 0
    assert main(["bench", "ep", "--quick", "--file", str(out)]) == 0
    text = out.read_text()
    assert "<!-- bench:ep -->\n## ep quick=False\n<!-- /bench:ep -->" in text
    assert "<!-- bench:ep:quick -->\n## ep quick=True\n<!-- /bench:ep:quick -->" in text
    assert main(["bench", "ep", "--file", str(out)]) == 0
    assert out.read_text() == text
