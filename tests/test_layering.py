"""Nothing in the package imports upward: commands → report → campaign (loop → stages) →
numerical layers and the store → vocab. Read from the source (every import, also those
inside functions), so a lazy import that breaks the layering is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import alcsp

ROOT = Path(alcsp.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module name → the alcsp modules (and names imported from them) it imports."""
    out: dict[str, set[str]] = {}
    for f in ROOT.rglob("*.py"):
        mod = ".".join(("alcsp", *f.relative_to(ROOT).with_suffix("").parts))
        mod = mod.removesuffix(".__init__")
        got: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alcsp"):
                got.add(str(node.module))
                got |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                got |= {a.name for a in node.names if a.name.startswith("alcsp")}
        out[mod] = got
    return out


IMPORTS = _imports()


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _importers(target: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    return sorted(
        (m, t)
        for m, ts in IMPORTS.items()
        for t in ts
        if _within(t, (target,)) and not _within(m, allowed)
    )


def test_the_source_was_read():
    assert len(IMPORTS) > 50 and "alcsp.campaign.loop" in IMPORTS


@pytest.mark.parametrize(
    "target, allowed",
    [
        ("alcsp.cli", ("alcsp.cli", "alcsp.commands", "alcsp.__main__")),
        ("alcsp.commands", ("alcsp.commands", "alcsp.cli")),
        ("alcsp.report", ("alcsp.report", "alcsp.commands", "alcsp.cli")),
        ("alcsp.campaign", ("alcsp.campaign", "alcsp.commands", "alcsp.cli")),
        # the stages never reach back into the loop that composes them
        ("alcsp.campaign.loop", ("alcsp.campaign.loop", "alcsp.campaign")),
    ],
)
def test_no_upward_import(target, allowed):
    assert _importers(target, allowed) == []


def test_the_stages_do_not_import_the_loop():
    stages = [m for m in IMPORTS if m.startswith("alcsp.campaign.") and m != "alcsp.campaign.loop"]
    assert len(stages) >= 6
    for m in stages:
        assert not any(_within(t, ("alcsp.campaign.loop",)) for t in IMPORTS[m]), m


def test_the_store_and_vocab_stay_below_the_model_and_the_campaign():
    above = ("alcsp.campaign", "alcsp.report", "alcsp.commands", "alcsp.potential", "alcsp.relax")
    for m, ts in IMPORTS.items():
        if _within(m, ("alcsp.store",)):
            assert not [t for t in ts if _within(t, above)], m
    assert IMPORTS["alcsp.vocab"] == set()
