"""alcsp: active-learning crystal structure prediction with the ACNN potential.

The package layout follows the pipeline:
compositions -> generate -> relax -> dedup -> hull -> select -> oracle (label) -> potential (train),
driven by ``campaign`` and kept in ``store``.
"""

__version__ = "0.1.0"
