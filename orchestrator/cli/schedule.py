"""`matscreen schedule ...`: run campaigns on a cron schedule as Ray jobs, or submit one now."""
from __future__ import annotations

import argparse

HELP = "run campaigns on a cron schedule (Ray jobs); submit a campaign job now"
DESCRIPTION = """\
Schedules live in one JSON file (--file, else $MATSCREEN_SCHEDULES, else .matscreen/schedules.json).
Cron expressions have 5 fields (min hour day month weekday) and are read in UTC.

  matscreen schedule add nightly campaigns/smoke.yaml --cron "0 2 * * *"
  matscreen schedule list
  matscreen schedule run-due            # one tick: submit what is due (cron or systemd timer)
  matscreen schedule daemon             # or: a loop that ticks every --interval seconds
  matscreen schedule remove nightly
  matscreen schedule submit campaigns/smoke.yaml   # one-off Ray job, spec validated first

Jobs go to the Ray job server at --address / $RAY_ADDRESS (default http://127.0.0.1:8265),
with this directory uploaded minus .rayignore (.venv, data, outputs).  A scheduled run is
`matscreen campaign run SPEC --incremental`: the candidate list is generated again; new
candidates, and finished ones whose shared-element training data in the store changed, are
screened (--full at `add` drops --incremental).  A schedule whose previous job still runs is
skipped.  Each
execution is recorded in the schedule file and in MLflow (experiment "matscreen-schedules").
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("schedule", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    def common(p):
        p.add_argument("--file", metavar="PATH", help="schedule file (default $MATSCREEN_SCHEDULES or .matscreen/schedules.json)")
        return p

    add = common(sub.add_parser("add", help="add a cron schedule for a campaign spec",
                                description="Add a schedule. The spec is validated now; a malformed spec is refused."))
    add.add_argument("name", help="schedule name (letters, digits, . _ -)")
    add.add_argument("spec", help="campaign spec YAML, relative to --working-dir")
    add.add_argument("--cron", required=True, help='5-field cron expression in UTC, e.g. "0 2 * * *" (02:00 daily)')
    add.add_argument("--working-dir", metavar="DIR", help="directory uploaded as the job's working_dir (default: current)")
    add.add_argument("--address", help="Ray dashboard address for this schedule (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    add.add_argument("--full", action="store_true", help="run without --incremental (default: screen only new candidates)")
    add.add_argument("--replace", action="store_true", help="overwrite a schedule with the same name")
    add.set_defaults(func=_add)

    lst = common(sub.add_parser("list", help="list schedules, their next run and last outcome"))
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=_list)

    rm = common(sub.add_parser("remove", help="remove a schedule (a running job is not stopped)"))
    rm.add_argument("name")
    rm.set_defaults(func=_remove)

    def tick_options(p):
        p.add_argument("--backend", choices=["ray", "local"], default="ray",
                       help="ray: submit Ray jobs (default); local: run detached processes on this machine")
        p.add_argument("--tracking-uri", help="MLflow store for execution records (default $MLFLOW_TRACKING_URI or .matscreen/mlflow.db)")
        p.add_argument("--no-mlflow", action="store_true", help="record executions in the schedule file only")
        return p

    due = tick_options(common(sub.add_parser("run-due", help="submit every due campaign once, then exit")))
    due.add_argument("--now", metavar="ISO_TIME", help="pretend it is this UTC time (testing, back-fill)")
    due.add_argument("--name", help="only this schedule")
    due.set_defaults(func=_run_due)

    daemon = tick_options(common(sub.add_parser("daemon", help="tick every --interval seconds until stopped (Ctrl-C / SIGTERM)")))
    daemon.add_argument("--interval", type=float, default=60.0, help="seconds between ticks (default 60)")
    daemon.add_argument("--max-ticks", type=int, default=0, help="stop after this many ticks (0: run forever)")
    daemon.set_defaults(func=_daemon)

    submit = sub.add_parser("submit", help="validate a spec, then submit `matscreen campaign run SPEC` as a Ray job now")
    submit.add_argument("spec", help="campaign spec YAML, relative to --working-dir")
    submit.add_argument("--working-dir", metavar="DIR", default=".", help="directory uploaded as the job's working_dir (default .)")
    submit.add_argument("--address", help="Ray dashboard address (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    submit.add_argument("--incremental", action="store_true", help="pass --incremental: screen new candidates and those whose shared-element training data changed")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish; exit 0 only if it SUCCEEDED")
    submit.set_defaults(func=_submit)


def _add(args) -> int:
    from orchestrator.ops.scheduler import ScheduleStore, utcnow

    store = ScheduleStore(args.file)
    sched = store.add(args.name, args.spec, args.cron, working_dir=args.working_dir, address=args.address,
                      incremental=not args.full, replace=args.replace)
    print(f"added schedule {sched.name}: {sched.spec} at \"{sched.cron}\" (UTC); next run {sched.next_run(utcnow()):%Y-%m-%d %H:%M}Z")
    print(f"schedule file: {store.path}")
    return 0


def _list(args) -> int:
    import json
    from dataclasses import asdict

    from orchestrator.ops.scheduler import ScheduleStore, utcnow

    store = ScheduleStore(args.file)
    schedules = store.load()
    now = utcnow()
    if args.json:
        rows = []
        for s in schedules.values():
            row = asdict(s)
            row["next_run"] = s.next_run(now).isoformat().replace("+00:00", "Z")
            rows.append(row)
        print(json.dumps(rows, indent=2))
        return 0
    if not schedules:
        print(f"no schedules in {store.path}; add one with `matscreen schedule add NAME SPEC --cron \"0 2 * * *\"`")
        return 0
    header = f"{'name':<16} {'cron':<14} {'next run (UTC)':<17} {'last outcome':<22} {'last job':<36} spec"
    print(header)
    for s in schedules.values():
        last = s.history[-1] if s.history else None
        print(f"{s.name:<16} {s.cron:<14} {s.next_run(now):%Y-%m-%d %H:%M}  {(last.outcome if last else '-'):<22} "
              f"{(last.job_id or '-') if last else '-':<36} {s.spec}")
    return 0


def _remove(args) -> int:
    from orchestrator.ops.scheduler import ScheduleStore

    sched = ScheduleStore(args.file).remove(args.name)
    print(f"removed schedule {sched.name}" + (f" (job {sched.last_job_id} keeps running)" if sched.last_job_id else ""))
    return 0


def _backend_factory(args):
    from orchestrator.ops.scheduler_backends import LocalProcessBackend, RayJobBackend

    if args.backend == "local":
        local = LocalProcessBackend()
        return lambda _sched: local
    cache: dict = {}
    return lambda sched: cache.setdefault(sched.address, RayJobBackend(sched.address))


def _recorder(args):
    if args.no_mlflow:
        return None
    from orchestrator.ops.scheduler_tracking import ExecutionRecorder

    return ExecutionRecorder(args.tracking_uri)


def _run_due(args) -> int:
    from orchestrator.ops.scheduler import ScheduleStore, parse_time, run_due

    now = parse_time(args.now) if args.now else None
    report = run_due(ScheduleStore(args.file), _backend_factory(args), now=now, recorder=_recorder(args), only=args.name)
    for line in report.lines():
        print(line)
    return 1 if report.rejected else 0


def _daemon(args) -> int:
    import signal
    import sys
    import time

    from orchestrator.ops.scheduler import ScheduleStore, run_due, utcnow

    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    store, backend, recorder = ScheduleStore(args.file), _backend_factory(args), _recorder(args)
    print(f"matscreen scheduler: ticking every {args.interval:g} s on {store.path}; Ctrl-C to stop", flush=True)
    ticks = 0
    while not stop["flag"]:
        try:
            report = run_due(store, backend, recorder=recorder)
            for line in report.lines():
                if line != "nothing due":
                    print(f"{utcnow():%Y-%m-%d %H:%M:%S}Z {line}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a daemon survives a bad tick (cluster down, ...)
            print(f"{utcnow():%Y-%m-%d %H:%M:%S}Z tick failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                  file=sys.stderr, flush=True)
        ticks += 1
        if args.max_ticks and ticks >= args.max_ticks:
            break
        deadline = time.monotonic() + args.interval
        while not stop["flag"] and time.monotonic() < deadline:
            time.sleep(min(1.0, args.interval))
    return 0


def _submit(args) -> int:
    import time
    from pathlib import Path

    from orchestrator.ops.scheduler import campaign_entrypoint, validate_spec
    from orchestrator.ops.scheduler_backends import RayJobBackend

    working_dir = Path(args.working_dir).resolve()
    spec = Path(args.spec)
    spec_path = spec if spec.is_absolute() else working_dir / spec
    if not spec_path.is_file():
        from common.errors import InputError

        raise InputError(f"campaign spec {spec_path} not found; give a path relative to --working-dir")
    validate_spec(spec_path)  # a malformed spec fails here, before anything is uploaded
    entrypoint = campaign_entrypoint(str(spec), args.incremental)
    backend = RayJobBackend(args.address)
    sub_id = f"matscreen-{spec.stem}-{time.strftime('%Y%m%dT%H%M%S')}"
    job_id = backend.submit(entrypoint, sub_id, str(working_dir), {"matscreen.spec": str(spec)})
    print(f"submitted job {job_id} to {backend.address}: {entrypoint}")
    print(f"follow it with: ray job logs --address {backend.address} --follow {job_id}")
    if not args.wait:
        return 0
    while (status := backend.status(job_id)) in ("PENDING", "RUNNING"):
        time.sleep(2)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1
