"""Operations: the scheduler, job submission backends, secrets, and how a run joins or starts Ray."""
