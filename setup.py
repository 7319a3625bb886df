"""Package discovery for the four source roots, which sit side by side in the repository but install as
``editkit``, ``editkit.methods``, ``editkit.evaluation`` and ``editkit.reports``: every sub-package found
under a root (a new method folder under methods/ included) goes into the wheel with no edit anywhere.
Everything else about the package is in pyproject.toml."""

from setuptools import find_packages, setup

ROOTS = {"editkit": "editkit", "editkit.methods": "methods", "editkit.evaluation": "evaluation", "editkit.reports": "reports"}

packages = [name for name in ROOTS]
for name, folder in ROOTS.items():
    packages += [f"{name}.{sub}" for sub in find_packages(folder) if f"{name}.{sub}" not in ROOTS]

setup(package_dir=ROOTS, packages=sorted(set(packages)))
