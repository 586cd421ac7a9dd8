"""GitOps: promotion as commits to the repository Argo CD watches, and what a cluster runs.

- :mod:`refinery.gitops.repo`: promote, revert and read a release (the import path of the whole flow);
- :mod:`refinery.gitops.review`: promotions to a protected environment, on review branches;
- :mod:`refinery.gitops.state`: every overlay and review branch, read from one clone;
- :mod:`refinery.gitops.change`: one overlay change as one commit on a throwaway clone;
- :mod:`refinery.gitops.overlay`: what a release is, and the overlay edit on text;
- :mod:`refinery.gitops.seed`: the repository, created and seeded on first use;
- :mod:`refinery.gitops.git`: the git command runner and credentials;
- :mod:`refinery.gitops.cluster`: the serving Deployment, read through the Kubernetes API.
"""
