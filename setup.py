"""The compiled half of ownvol: the walk's per-entry loop (ownvol/_entries.c). Everything else is in pyproject.toml.

optional: where no C compiler or Python headers are, the build warns and ownvol.ownership walks with its Python
loop (the same walk, about 1.4 times the time)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ownvol._entries", ["ownvol/_entries.c"], optional=True)])
