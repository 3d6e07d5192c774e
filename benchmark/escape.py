"""Escaping user text (model, evaluation and table names) for Markdown, LaTeX and HTML tables."""

from __future__ import annotations

import re

#: Characters that end a Markdown table cell (``|``) or start emphasis, code or a link in one; a model
#: named ``a|b`` or ``my_net_v2`` must not break or restyle the table.
_MD_SPECIAL = re.compile(r"([\\|_*`\[\]<>])")

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "†": r"$^\dagger$"}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL))


def md_escape(value: object) -> object:
    """A text value escaped for a Markdown table cell (other values returned as they are)."""
    return _MD_SPECIAL.sub(r"\\\1", value) if isinstance(value, str) else value


def tex_escape(text: str) -> str:
    """Text escaped for LaTeX (``&``, ``%``, ``_`` ... typeset as themselves)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL[m.group(0)], text)
