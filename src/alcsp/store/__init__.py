"""The campaign store: one directory, one SQLite database, every result kept.

``db`` opens, creates (atomically) and migrates the database; ``campaign_store`` holds the
tables (``CampaignStore``); ``records`` the typed rows and tables its queries return;
``exchange`` reads and writes extxyz/CIF; ``hulls`` builds hulls from what is stored
(for reports and commands that must not import the campaign, its model or its oracle).
"""

from alcsp.store.campaign_store import CampaignStore
from alcsp.store.db import DB_NAME, SCHEMA_VERSION, CampaignDirError, StoreError
from alcsp.store.records import (
    IterationRecord,
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
    "IterationRecord",
    "ModelRecord",
    "OracleRelaxationRecord",
    "RelaxationRecord",
    "RelaxationTable",
    "StoreError",
    "composition_key",
]
