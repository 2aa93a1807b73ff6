"""Proof nothing was lost: counts, checksums, spot checks, the independent Python rules, reports, lineage."""
