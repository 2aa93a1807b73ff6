"""Ships the dbt project inside the package: the repository keeps it at its top level (dbt_project.yml,
dbt_project/, profiles/), and a built package carries a copy of it as loader/transform/dbt/, where
loader.transform.project finds it. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DBT_PROJECT = ("dbt_project.yml", "dbt_project", "profiles")
PACKAGED_AT = Path("loader", "transform", "dbt")


class BuildWithDbtProject(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the repository's own copy
            return
        destination = Path(self.build_lib) / PACKAGED_AT
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir(parents=True)
        for name in DBT_PROJECT:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, destination / name)


setup(cmdclass={"build_py": BuildWithDbtProject})
