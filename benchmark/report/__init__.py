"""Reports: tables and figures of a results folder, from the store alone (nothing here runs a model).

``build_report`` reads a results folder, ``write_report`` writes its files, ``render_terminal``
formats it for the terminal (see ``benchmark.report.render``).
"""

from benchmark.report.render import Report, build_report, render_terminal, write_report

__all__ = ["Report", "build_report", "render_terminal", "write_report"]
