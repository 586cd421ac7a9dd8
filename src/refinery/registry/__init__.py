"""The model registry: versions, tags, aliases, lineage and the model card, on MLflow.

- :mod:`refinery.registry.mlflow_registry`: :class:`Registry`, the versions and their aliases;
- :mod:`refinery.registry.lineage`: the lineage a version records (data, configuration, code, training);
- :mod:`refinery.registry.card`: the model card;
- :mod:`refinery.registry.champions`: each environment's champion alias and the tags promotion records.

It calls no stage: evaluating, gating, packaging and promoting a version is :mod:`refinery.release`.
"""
