"""Evaluation: score the challenger (and the champion) on the test set, then decide on promotion.

Modules, from the definitions up:

- ``checks``: input checks shared by the scoring functions (one message style for bad input).
- ``metrics``: the scores of one model (``macro_f1``, ``classification_metrics``, latency) on
  scikit-learn, and their records; the one place each classification score is defined.
- ``curves``: scores of class probabilities: log loss, ROC and precision-recall curves, AUC, average
  precision (scikit-learn), calibration error and the reliability table.
- ``slices``: text-length buckets and per-slice scores.
- ``significance``: the paired bootstrap (with its vectorised macro-F1) and McNemar's test.
- ``scoring``: every metric of one model from its probabilities, and the challenger-champion comparison.
- ``result``: ``EvaluationResult``, the record written as ``evaluation.json``.
- ``evaluate``: the evaluate step: read the test set, run the models, publish the files.
- ``plots`` and ``report``: the figures, and the HTML report that embeds them.
- ``gate``: the promotion gate's rules and its ``GateDecision``.
"""
