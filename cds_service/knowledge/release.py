"""The knowledge's release identity: its declared version plus a hash of its content.

The version is what a committee approves ("2026.12.0" in ``release.yaml``); the hash makes it
exact: two folders with the same release hold byte-identical files, and a local edit that was
not given a new version still shows as a different release on every card.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml

from cds_service.core.rules import Problems

RELEASE_FILE = "release.yaml"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,39}$")
UNDECLARED = "undeclared"


def content_hash(directory: Path) -> str:
    """SHA-256 over every file's path (relative, '/'-separated) and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def release_of(directory: Path, problems: Problems) -> str:
    """``version+sha256.<first 12 hex digits>``; a problem when release.yaml is there but wrong."""
    version = UNDECLARED
    path = directory / RELEASE_FILE
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except yaml.YAMLError as exc:
            problems.add(RELEASE_FILE, "$", f"not valid YAML: {exc}")
            data = None
        declared = data.get("version") if isinstance(data, dict) else None
        if isinstance(declared, str) and _VERSION.match(declared):
            version = declared
        else:
            problems.add(RELEASE_FILE, "version", "give the version as a string of letters, digits, '.' and '-'"
                         " (e.g. \"2026.12.0\")")
    return f"{version}+sha256.{content_hash(directory)[:12]}"
