"""Tooling that drives a server from outside: :mod:`~refinery.loadtest.process` runs one in a subprocess
until it is ready and stops it with everything it started; :mod:`~refinery.loadtest.load` sends it
bounded HTTP load and measures the answers.

Used by the pre-promotion serving check (:mod:`refinery.packaging.check`), the serving benchmark
(``bench/serve.py``) and the HTTP tests; not part of what a Bento serves, so it lives apart from
:mod:`refinery.serving`.
"""
