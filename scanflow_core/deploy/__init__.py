"""Deploy a workflow: export it as a docker-compose file, a Docker Swarm stack or Kubernetes manifests.

Each exporter turns the same :class:`~scanflow_core.deploy.common.Deployment` (every planned step as a
container, with the environment and placeholders the container runtimes give it) into its target's
files. ``scanflow export compose|swarm|k8s scanflow.yaml -o DIR`` writes them.

Modules: :mod:`~scanflow_core.deploy.common` (what every target shares),
:mod:`~scanflow_core.deploy.compose`, :mod:`~scanflow_core.deploy.swarm`,
:mod:`~scanflow_core.deploy.kubernetes` and :mod:`~scanflow_core.deploy.commands` (the CLI);
:mod:`~scanflow_core.deploy.pods` (one step's pod, for an orchestrator's pod operator) and
:mod:`~scanflow_core.deploy.image` (``scanflow image build``: the image those pods run). This package
imports nothing itself, so that the CLI stays quick to start.
"""
