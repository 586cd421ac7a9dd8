"""Stage 7: the model packaged as a Bento, stored, and served once before it may be promoted.

- :mod:`~refinery.packaging.bento`: build the Bento (shipping only :mod:`~refinery.packaging.closure`, the
  service's import closure) and import it for serving; :mod:`~refinery.packaging.store`: the Bento store;
- :mod:`~refinery.packaging.runtime` and :mod:`~refinery.packaging.onnx_export`: torch fp32 or ONNX int8;
- :mod:`~refinery.packaging.check`: the serving check; :mod:`~refinery.packaging.oci`: image digests.
"""
