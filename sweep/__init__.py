"""ntkdiv sweep: specs and grids, Ray dispatch, resume, MLflow logging, Optuna search, the CLI.

Ray, MLflow and Optuna are each imported in exactly one adapter (``_ray``, ``_mlflow/``,
``_optuna``), and only when a command needs them. ``docs/architecture.md`` maps the modules.
"""
