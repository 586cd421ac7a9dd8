"""Stage 10: what the service answered, whether it drifted, and whether to retrain.

- :mod:`~refinery.monitoring.inference_log` over :mod:`~refinery.monitoring.log_records`: the predictions and the
  labels sent back (serving writes it; the only module of this package serving imports);
- :mod:`~refinery.monitoring.descriptors`, :mod:`~refinery.monitoring.drift`, :mod:`~refinery.monitoring.signals`:
  the drift checks of a window against the reference kept with the model;
- :mod:`~refinery.monitoring.decision`: the trigger policy, a pure function; :mod:`~refinery.monitoring.trigger_log`
  records each decision; :mod:`~refinery.monitoring.controller` runs one round;
- :mod:`~refinery.monitoring.story`: the loop so far, as a table.
"""
