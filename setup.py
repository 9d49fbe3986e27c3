"""Puts the repository's data (hardened_cluster/resources.py: SHIPPED) into the wheel's package.

MANIFEST.in carries the same into an sdist; a wheel built from one that lacks a path fails here.
"""
import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_spec = importlib.util.spec_from_file_location("resources", Path(__file__).parent / "hardened_cluster" / "resources.py")
resources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resources)
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


class BuildWithData(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        target = Path(self.build_lib) / "hardened_cluster" / resources.INSTALLED
        shutil.rmtree(target, ignore_errors=True)  # a file removed from the checkout leaves the wheel too
        for name in resources.SHIPPED:
            if not Path(name).exists():
                raise FileNotFoundError(f"{name} is missing from the source tree (MANIFEST.in must include it)")
            if Path(name).is_dir():
                shutil.copytree(name, target / name, ignore=SKIP)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(name, target / name)


setup(cmdclass={"build_py": BuildWithData})
