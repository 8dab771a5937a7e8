"""The campaign store: one directory, one SQLite database, every result kept.

``db`` opens, creates (atomically) and migrates the database; ``campaign_store`` holds
``CampaignStore``, the entry point, and the writes that span tables; one repository per
table holds that table's queries (``compositions``, ``structures``, ``relaxations``,
``labels``, ``oracle_relaxations``, ``models``, ``iterations``, ``meta`` with the search-shard
marks), reached as ``CampaignStore.tables``; ``records`` the typed rows and tables their
queries return; ``exchange`` reads and writes extxyz/CIF; ``hulls`` builds hulls from what is
stored (for reports and commands that must not import the campaign, its model or its oracle).
"""

from alcsp.store.campaign_store import CampaignStore
from alcsp.store.db import DB_NAME, SCHEMA_VERSION, CampaignDirError, StoreError
from alcsp.store.records import (
    IterationCounts,
    IterationRecord,
    ModelErrors,
    ModelRecord,
    OracleRelaxationRecord,
    RelaxationRecord,
    RelaxationTable,
)
from alcsp.vocab import composition_key

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "CampaignDirError",
    "CampaignStore",
    "IterationCounts",
    "IterationRecord",
    "ModelErrors",
    "ModelRecord",
    "OracleRelaxationRecord",
    "RelaxationRecord",
    "RelaxationTable",
    "StoreError",
    "composition_key",
]
