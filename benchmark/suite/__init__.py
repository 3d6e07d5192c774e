"""Suite files: field types (``fields``), the schema (``models``, ``schema``) and loading (``loading``).

Nothing here imports torch: ``bench validate`` checks a suite completely without it. Import from the
submodules (``from benchmark.suite.loading import load_suite``); this package module stays empty so
that importing the low-level ``fields`` never drags in the schema.
"""
