"""Raw schemas in PostgreSQL: every source table copied as text, with its lineage and its ledger rows."""
