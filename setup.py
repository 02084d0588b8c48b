"""Build step pyproject.toml cannot declare: ship the top-level ``tasks/``, ``configs/`` and
``model_zoo/`` folders inside the wheel as ``eqbench/_shipped/<name>/`` (read through
``eqbench.resources.shipped_dir``). All other metadata is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("tasks", "configs", "model_zoo")  # = eqbench.resources.SHIPPED
SUFFIXES = (".yaml", ".yml", ".md")  # = eqbench.resources.SHIPPED_SUFFIXES


class BuildPyWithShipped(build_py):
    """``build_py``, then copy the shipped folders' YAML and Markdown files into the package."""

    def run(self) -> None:
        super().run()
        for name in SHIPPED:
            source = ROOT / name
            target = Path(self.build_lib) / "eqbench" / "_shipped" / name
            for path in sorted(source.rglob("*")):
                if path.is_file() and path.suffix in SUFFIXES:
                    out = target / path.relative_to(source)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, out)


setup(cmdclass={"build_py": BuildPyWithShipped})
