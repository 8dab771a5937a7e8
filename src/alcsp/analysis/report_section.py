"""Moved to ``alcsp.analysis.report_sections``, which holds every section of the report
that comes from ``DIR/analysis``; this name re-exports ``cage_section`` for the callers
that still import it from here."""

from __future__ import annotations

from alcsp.analysis.report_sections import cage_section

__all__ = ["cage_section"]
