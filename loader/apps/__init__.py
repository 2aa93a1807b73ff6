"""n8n and Flowise on the consolidated PostgreSQL: copy an application's SQLite database into the schema
the application itself made, converted to its column types, verified table by table (see copier.py)."""

from loader.apps.copier import AppCopyResult, AppCopyUsageError, TableReport, app_copy
from loader.apps.source import SourceUnreadable

__all__ = ["AppCopyResult", "AppCopyUsageError", "SourceUnreadable", "TableReport", "app_copy"]
