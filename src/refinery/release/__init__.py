"""The release flow: a trained model judged, registered, packaged, checked and promoted, in one place.

The pipeline's steps (:mod:`refinery.orchestration.steps`, which the KFP components call) and the
``refinery models`` commands (:mod:`refinery.cli`) both call these functions; neither composes the flow
itself. Each module is one step of it:

- :mod:`refinery.release.judge`: evaluate a model against an environment's champion, gate the result;
- :mod:`refinery.release.register`: register it with its lineage, verdicts and model card;
- :mod:`refinery.release.package`: build and store its Bento; serve it once as production would
  (the serving check); check the Bento and the serving image before a promotion;
- :mod:`refinery.release.promote`: the promotion itself, GitOps commit then champion alias (or a review
  branch in a protected environment), refused when another promotion won;
- :mod:`refinery.release.flows`: the ways into it: the pipeline's promote step, ``refinery models
  promote [--env]`` and ``refinery models rollback``;
- :mod:`refinery.release.sync`: ``refinery models sync``, the aliases following merged review branches;
- :mod:`refinery.release.status`: ``refinery status``, what the registry, GitOps and the cluster say.

It calls the stages (:mod:`refinery.evaluation`, :mod:`refinery.packaging`, :mod:`refinery.gitops`) and
records in the registry (:mod:`refinery.registry`), which calls none of them.
"""
