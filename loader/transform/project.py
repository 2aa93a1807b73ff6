"""Where the dbt project is: inside the installed package (a wheel carries a copy as
loader/transform/dbt/, see setup.py), or, in a checkout and an editable install, the repository's top
level (dbt_project.yml, dbt_project/, profiles/)."""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "dbt"
CHECKOUT = Path(__file__).resolve().parents[2]

PROJECT_DIR = PACKAGED if (PACKAGED / "dbt_project.yml").is_file() else CHECKOUT
PROFILES_DIR = PROJECT_DIR / "profiles"
