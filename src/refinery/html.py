"""The page shell of refinery's HTML reports: one stylesheet, no scripts, nothing fetched from elsewhere.

A report must read the same offline and inside the Kubeflow UI, which shows an HTML artifact in a
sandboxed frame, so each page carries its own stylesheet and draws its plots inline. Callers escape every
value that comes from data; :func:`page` escapes only the title it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1d2430;max-width:72rem}
h1{font-size:1.5rem;margin:0 0 1rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
.status{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;font-weight:600;color:#fff}
.passed{background:#2e7d32}.failed{background:#c62828}.warning{background:#b26a00}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f5f7;padding:0 .2rem;border-radius:.2rem}
.bar{background:#4f7cac;height:.8rem;display:inline-block;vertical-align:middle}
.msg{margin:.3rem 0}.muted{color:#57606a}
""".strip()


def page(title: str, body: Iterable[str], *, css: str = "") -> str:
    """A whole HTML document with the shared stylesheet.

    Args:
        title: The document title, escaped here.
        body: Markup fragments, already escaped, joined by newlines; empty fragments are dropped.
        css: Rules appended to the shared stylesheet for this page alone.

    Returns:
        The page, ending with a newline.
    """
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{CSS}{css}</style></head><body>",
        *body,
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
