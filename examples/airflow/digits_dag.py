"""The digits workflow (``examples/digits/scanflow.yaml``) as an Airflow DAG.

``dag_from_spec`` makes one task per step, with the dependencies of the spec, then ``scanflow_finish``,
which judges the workflow's objectives and closes the Scanflow run. Every task of a DAG run is a step
of one Scanflow run (its id is the Airflow run id, or ``scanflow_run_id`` in the run's conf).

Link this file into your DAGs folder (the spec is found beside the example, through the link), then::

    airflow dags test digits
"""

from __future__ import annotations

from pathlib import Path

from scanflow_airflow import dag_from_spec

#: The digits spec of this repository (``resolve()`` follows a link in the DAGs folder back here).
SPEC = Path(__file__).resolve().parents[1] / "digits" / "scanflow.yaml"

dag = dag_from_spec(SPEC, "digits", tags=["scanflow", "example"])
