"""Experiment loggers: MLflow and Weights & Biases, switched on the MMDetection way (see docs/loggers.md).

:mod:`.settings` (torch-free) says which loggers a config and ``DETCORE_LOGGERS`` switch on and
checks their keys; :mod:`.runs` decides which run a start continues; :mod:`.hook` is the trainer
hook; :mod:`.mlflow_run` and :mod:`.wandb_run` talk to each tool (imported only when switched on).
"""
