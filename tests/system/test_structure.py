"""The layout is the design: the import contracts of setup.cfg ([importlinter]) hold, so the
sans-IO core imports no web framework, HTTP client, database driver nor another room."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "setup.cfg")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_every_room_says_its_job():
    package = ROOT / "cds_service"
    rooms = [p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert {p.name for p in rooms} >= {"core", "fhirfetch", "storage", "knowledge", "web"}
    for room in rooms:
        text = (room / "__init__.py").read_text()
        assert text.startswith('"""') and len(text.split('"""')[1].strip()) > 20, f"{room.name}/__init__.py has no purpose line"


def test_the_module_map_names_every_module_and_only_modules_that_exist():
    """docs/architecture.md maps every module of the package by its path, and names none that is gone."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    import re

    named = {m for m in re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", section) if not m.startswith("tests/")}
    package = ROOT / "cds_service"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py")}
    assert sorted(named - modules) == [], "the module map names modules that do not exist"
    assert sorted(modules - named) == [], "modules missing from the module map in docs/architecture.md"


# Core modules with no logic of their own to test directly: package markers only.
_NO_UNIT_TEST_NEEDED = {
    "core/__init__.py",  # the room's purpose line
    "core/conditions/__init__.py",  # re-exports the registry's public names
}


def test_every_core_module_has_unit_tests_named_after_it():
    """A newcomer finds a core module's tests by its name: tests/unit/test_<module>.py, or
    test_<module>_<aspect>.py; a module of core/conditions may also be test_conditions_<module>.py."""
    package = ROOT / "cds_service"
    tests = {p.name for p in (ROOT / "tests" / "unit").glob("test_*.py")}
    missing = []
    for module in sorted((package / "core").rglob("*.py")):
        relative = str(module.relative_to(package))
        if relative in _NO_UNIT_TEST_NEEDED:
            continue
        name = module.stem
        names = {f"test_{name}.py"} | ({f"test_conditions_{name}.py"} if module.parent.name == "conditions" else set())
        if not names & tests and not any(t.startswith(f"test_{name}_") for t in tests):
            missing.append(f"{relative}: add tests/unit/{min(names, key=len)}")
    assert missing == [], "core modules without unit tests:\n" + "\n".join(missing)
    assert all((package / m).exists() for m in _NO_UNIT_TEST_NEEDED), "an exemption names a module that is gone"
