"""The package's shape is checked, not hoped for: the import-linter contracts of pyproject.toml
(layers ground -> stages -> verification -> pipeline/report/viewer/bench -> commands -> CLI, no
import circles between siblings, no library module importing the CLI), no private name imported
across modules, and thin commands."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cardiotwin"


def test_import_contracts_hold(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    # import-linter's CLI runs logging.config.dictConfig, which disables every logger that exists
    # already (cardiotwin's among them) for the rest of the process: restore them afterwards
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = [lg.disabled for lg in loggers]
    root_handlers, root_level = list(logging.root.handlers), logging.root.level
    try:
        assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0
    finally:
        for lg, was in zip(loggers, disabled):
            lg.disabled = was
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(root_level)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_is_imported_from_another_module():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cardiotwin"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != name:
                        offences.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}")
    assert not offences, "\n".join(offences)


def test_commands_are_thin_adapters():
    # argument parsing, one call into the library, printing: about 80 lines at most
    long = {p.name: n for p in (PACKAGE / "commands").glob("*.py") if (n := len(p.read_text().splitlines())) > 80}
    assert not long, long
