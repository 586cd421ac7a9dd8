"""Running the pipelines: on one machine through kfp.local, or on a cluster through the Kubeflow Pipelines API.

- :mod:`~refinery.orchestration.steps`: the steps as plain functions, what each KFP component body calls;
- :mod:`~refinery.orchestration.local`: a run through kfp.local with a readable console;
  :mod:`~refinery.orchestration.containers`: its steps in containers (podman);
- :mod:`~refinery.orchestration.compiling`: one compile path for a cluster;
  :mod:`~refinery.orchestration.kfp_connection` and :mod:`~refinery.orchestration.kfp_api`: submitting runs;
  :mod:`~refinery.orchestration.schedules` over :mod:`~refinery.orchestration.schedules_file`: recurring runs;
- :mod:`~refinery.orchestration.retrain`: one drift-monitor round and where its retraining run goes.
"""
