"""The campaign: spec, ledger, the driver that orders the steps, the steps, MLflow tracking, results.

``driver`` sequences each candidate through the steps and records them in the ledger (``state``);
``steps`` holds one small function per step (each one actor call); ``spec`` is a tree of the
packages' own config dataclasses; ``tracking`` is the only MLflow writer; ``benchmark`` is another order of
the same steps.  Nothing here computes science.
"""
