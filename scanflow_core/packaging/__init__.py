"""Packaging: the model card (MLSpec's model metadata) and the registration of a packaged model.

A packaging step saves the model (an MLflow model folder, say) as one of its outputs and calls
:func:`write_model_card` to write ``model_card.json`` and a readable ``model_card.md`` beside it,
as two more outputs: the step path then attests all three, so the card is as verifiable as the model.
The card holds:

``model``           the packaged model's path, digest, size and format (MLflow flavors when it is one)
``provenance``      the workflow, run id, spec digest, and every step upstream of the packaging step
                    with its status, its outputs' digests and the digest of its attestation
``hyperparameters`` the params of the upstream training steps
``metrics``         the metrics of the upstream training, evaluation and test steps
``objectives``      the workflow objectives that can be judged from those steps, and whether they hold
``data``            every upstream data artifact: producer, digest, size
``signature``       the inputs and outputs the model takes and gives
``infrastructure``  python, platform, the packages it needs, cpu / gpu / memory

:func:`register_model` registers a packaged MLflow model in the run's MLflow store (when tracking
is on), under the workflow's name, linked to the packaging step's MLflow run.

Example (a step's function, called in process)::

    def package(model: Path, mlflow_model: Path, model_card: Path, model_card_md: Path, ctx=None):
        save_my_model(model, mlflow_model)
        card = write_model_card(ctx, mlflow_model, model_card, model_card_md)
        return {"model_size": card["model"]["size"]}
"""

from __future__ import annotations

from scanflow_core.packaging.card import (
    ATTESTATION_TAG,
    CARD_SCHEMA,
    load_model_card,
    model_card,
    pipeline_digest,
    write_model_card,
)
from scanflow_core.packaging.markdown import render_model_card
from scanflow_core.packaging.registry import RegisteredModel, register_model

__all__ = [
    "ATTESTATION_TAG",
    "CARD_SCHEMA",
    "RegisteredModel",
    "load_model_card",
    "model_card",
    "pipeline_digest",
    "register_model",
    "render_model_card",
    "write_model_card",
]
