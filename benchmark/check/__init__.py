"""``bench check``: the CI regression gate.

A results folder's ``tidy.csv`` is compared with a baseline CSV (:mod:`benchmark.check.gate`) or the
RobustBench leaderboard (:mod:`benchmark.check.leaderboard`), each row with a tolerance derived from
its number of examples (:mod:`benchmark.check.rules`), and shown as a table, JUnit XML or a Markdown
summary (:mod:`benchmark.check.output`). The command line is :mod:`benchmark.check.cli`. Checks read
the stored tables only; they never recompute an attack. Importing this package imports nothing heavy.
"""
