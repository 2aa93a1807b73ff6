"""Backups of every source database before anything else touches it, and the manifest that verifies them."""
