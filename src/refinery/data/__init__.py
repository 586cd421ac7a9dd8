"""Stages 1 and 2: the labelled data checked against its contract, then prepared for training.

- :mod:`~refinery.data.load`, :mod:`~refinery.data.sources`: reading the data and the new labelled rows a run adds;
- :mod:`~refinery.data.validate`: the validate step, over :mod:`~refinery.data.suite` (the Great Expectations
  suite), :mod:`~refinery.data.expectations` (the expectations GX lacks), :mod:`~refinery.data.findings` (failed
  rules for people) and :mod:`~refinery.data.report` (Markdown and HTML);
- :mod:`~refinery.data.prepare`: the prepare step (split, balance, augment), over :mod:`~refinery.data.clean` (one
  file cleaned), :mod:`~refinery.data.text` (one definition of "the same text"), :mod:`~refinery.data.augment` and
  :mod:`~refinery.data.profile` (the training split's profile);
- :mod:`~refinery.data.demo`: the demo's generated reviews.
"""
