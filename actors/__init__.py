"""Ray actors: thin wrappers, one per campaign role, no science inside.  Each method calls one package
function (``reference``, ``models``, ``md``, ``analysis``) and answers with that package's dataclass as a
dict.  State that must survive a crash is never kept in an actor: every result is a file in the data
store plus the answer the driver records in the ledger.

Roles (``actors.roles``): CandidateGenerator, ReferenceWorker (pool, CPU), MDWorker (pool, GPU when the
cluster has one), StabilityJudge, Trainer.  The Tracker (single MLflow writer) is built by the
orchestrator from ``orchestrator.campaign.tracking.Tracker`` with :func:`actors.roles.remote`.
"""
