"""Ray actors: thin wrappers, one per campaign role, no science inside (they call ``actors.science``,
which calls the science packages).  State that must survive a crash is never kept in an actor:
every result is a file in the data store plus a JSON answer the driver records in the ledger.

Roles (``actors.roles``): CandidateGenerator, ReferenceWorker (pool, CPU), MDWorker (pool, GPU when the
cluster has one), StabilityJudge, Trainer.  The Tracker (single MLflow writer) is built by the
orchestrator from ``orchestrator.tracking.Tracker`` with :func:`actors.roles.remote`.
"""
