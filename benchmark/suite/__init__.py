"""Suite files: the schema (``models``, ``schema``) and loading (``loading``).

Nothing here imports torch: ``bench validate`` checks a suite completely without it. The field types
every schema shares (eps, strict sections) are ``benchmark.fields``, below this package, because the
evaluation kinds and training specs that the suite schema is built from use them too. Import from the
submodules (``from benchmark.suite.loading import load_suite``).
"""
