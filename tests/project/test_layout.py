"""The house rules of the layout: arrows point one way, and files stay readable in one sitting."""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("pipeline", "components", "demo")
# A file over this many lines says why in its opening docstring, in a
# sentence that starts with "Long because".
MAX_LINES = 400


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_components_never_import_the_pipeline_or_the_demos():
    offenders = [f"{path.relative_to(REPO)} imports {module}"
                 for path in python_files("components") for module in imported_modules(path)
                 if module.split(".")[0] in ("pipeline", "demo")]
    assert not offenders, offenders


def test_the_demos_never_import_the_pipeline():
    offenders = [f"{path.relative_to(REPO)} imports {module}"
                 for path in python_files("demo") for module in imported_modules(path)
                 if module.split(".")[0] == "pipeline"]
    assert not offenders, offenders


def test_every_stage_has_its_folder():
    for room in ("ingest", "train", "gate", "serve", "report"):
        assert (REPO / "components" / room / "__init__.py").is_file(), room
    loose = sorted(p.name for p in (REPO / "components").glob("*.py"))
    # Only what every stage shares sits beside the stage folders.
    assert loose == ["__init__.py", "artifacts.py", "file_lock.py", "image_ops.py", "model_contract.py", "spec.py"], loose


def test_long_files_say_why():
    unexplained = []
    for package in PACKAGES:
        for path in python_files(package):
            lines = path.read_text().count("\n")
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            if lines > MAX_LINES and "Long because" not in docstring:
                unexplained.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not unexplained, unexplained
