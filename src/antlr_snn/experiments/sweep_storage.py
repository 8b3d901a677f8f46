"""Where a sweep's trials live: the Optuna storage, its studies, and the trial ledger.

Each method has one study, ``<prefix>-<method>``, whose user attribute ``antlr_snn_sweep``
holds its definition (the fixed settings, the search space, the pruning rule): a process that
joins a study takes it and must agree with it. The ledger (:func:`claim`, :func:`counted`,
:func:`reap`, :func:`retry`) keeps ``--budget`` exact over any number of processes:

* a trial counts once it is asked for, while it runs, once it is finished (complete, pruned,
  or failed by an error of its own), or while it waits to run again;
* a trial whose process died (SIGKILL, a lost machine) is failed, and a copy with the same
  settings is queued (``retry_of`` names the original); the failed one no longer counts, so
  the trial is neither lost nor counted twice. Its death is known at once to a process that
  resumes its folder (it holds the folder's lock, so the trial's process is gone), and to
  every process once the trial's heartbeat is older than the grace period;
* two processes that ask at the same time for the last place: the one whose trial comes
  later (in the order of the trials they stand for) fails it as surplus.
"""
from __future__ import annotations

import threading
import time
import warnings

from antlr_snn.errors import UserError, one_line

FORMAT = "antlr-snn-sweep/1"
ATTR = "antlr_snn_sweep"  # the study's definition (a user attribute of the study)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("antlr-snn sweep needs optuna: pip install 'antlr-snn[experiments]'") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # our own ask/tell loop records the heartbeats (Heartbeat) that Study.optimize would
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def masked(url: str) -> str:
    """``url`` with any password replaced (it is written into files and messages)."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: shown as given (it holds no password we could parse)
        return url


def _agree(given: dict, have: dict, source: str) -> None:
    for k, v in given.items():
        if k in have and have[k] != v:
            raise UserError(f"--{k.replace('_', '-')} {v} differs from {source} ({have[k]}); "
                            f"leave it out, or start another sweep (another --out / --study)")


def study_definition(method: str, base: dict, space: dict, prune: dict) -> dict:
    """What a study is (``space``: the method's own part of the search space)."""
    return {"format": FORMAT, "method": method,
            "settings": {k: v for k, v in base.items() if k != "data_dir"},
            "space": space, "prune": prune}


# ----------------------------------------------------------------------------- storage

def open_storage(url: str, heartbeat: int, on_stale):
    """An Optuna RDB storage with heartbeats; SQLite in ``BEGIN IMMEDIATE`` transactions, so
    that several processes wait for each other instead of failing with "database is locked"
    (SQLite refuses a second writer that upgrades a read transaction)."""
    optuna = _optuna()
    import sqlalchemy
    sqlite = url.startswith("sqlite:")
    kwargs = {"connect_args": {"timeout": 300}} if sqlite else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                             heartbeat_interval=heartbeat,
                                             grace_period=2 * heartbeat,
                                             heartbeat_stale_trial_callback=on_stale)
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError) as exc:
        raise UserError(f"--storage {masked(url)}: cannot open it ({one_line(exc)[:200]}); "
                        f"give a database URL such as sqlite:///path/sweep.db") from None
    if sqlite:
        engine = storage.engine

        @sqlalchemy.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, record):
            dbapi_connection.isolation_level = None  # the driver's own BEGIN off

        @sqlalchemy.event.listens_for(engine, "begin")
        def _begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        engine.dispose()
    return storage


def retry(study, t) -> None:
    """Queue ``t`` (a trial that died running) again with the same settings."""
    optuna = _optuna()
    root = t.system_attrs.get("retry_of", t.number)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=t.params, distributions=t.distributions,
        system_attrs={"retry_of": root}))


def reap(study, worker: str, grace: float) -> int:
    """Fail and queue again the running trials that are certainly dead: those of ``worker``
    (this process holds its folder's lock, so no live process runs them) and those that
    never got an owner within ``grace`` seconds. Returns how many."""
    optuna = _optuna()
    now, n = time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        started = t.datetime_start.timestamp() if t.datetime_start else now
        if owner == worker or (owner is None and now - started > grace):
            try:
                study._storage.set_trial_user_attr(t._trial_id, "note", "its process died "
                                                   "while it ran; queued again")
                failed = study._storage.set_trial_state_values(
                    t._trial_id, optuna.trial.TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError,
                    optuna.exceptions.StorageInternalError):
                failed = False  # another process got there first
            if failed:
                retry(study, t)
                n += 1
    return n


def counted(t) -> bool:
    """Whether a trial takes a place in the budget: finished, running or queued, or failed
    by an error of its own (not one that died with its process, nor a surplus one)."""
    s = t.state.name
    return s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING") or (
        s == "FAIL" and "error" in t.user_attrs)


def _order(t) -> tuple:
    return t.system_attrs.get("retry_of", t.number), t.number


def claim(study, budget: int, worker: str):
    """A trial for ``worker`` to run (Optuna's ``ask``) or None when the budget is full.
    Trials of processes that died are failed and queued again first (their heartbeats
    stopped). Two processes may ask at once; the trial that finds ``budget`` counted trials
    before it (in the order of the trials they stand for) is failed as surplus, so the budget
    is never exceeded."""
    optuna = _optuna()
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    # a queued trial (WAITING) already holds its place: ask() runs it
    if (not any(t.state.name == "WAITING" for t in trials)
            and sum(map(counted, trials)) >= budget):
        return None
    trial = study.ask()
    trial.set_user_attr("worker", worker)
    trials = study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == trial.number)
    if sum(1 for t in trials if counted(t) and _order(t) < _order(mine)) >= budget:
        trial.set_user_attr("note", "surplus: the budget was full")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    return trial


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds in a thread (the first
    at once), until :meth:`close`.

    Example:
        >>> class Storage:
        ...     beats = []
        ...     def record_heartbeat(self, trial_id):
        ...         self.beats.append(trial_id)
        >>> storage = Storage()
        >>> beat = Heartbeat(storage, 7, interval=60)
        >>> beat.close()
        >>> storage.beats
        [7]
    """

    def __init__(self, storage, trial_id: int, interval: float):
        self.stop = threading.Event()

        def beat():
            while True:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception:  # a busy database: the next beat will do
                    pass
                if self.stop.wait(interval):
                    return
        self.thread = threading.Thread(target=beat, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join()


def join(spec: dict, make_space, storage, existing: bool) -> dict:
    """The studies of ``spec``'s methods: existing ones are joined (their settings, space and
    pruning are taken where no flag was given, and must equal the flags given), missing ones
    created with the space ``make_space(method, settings)`` (unless ``existing``: then a
    missing study is an error). Fills ``spec["space"]``."""
    optuna = _optuna()
    given = spec.pop("_given", None)  # None: a resumed sweep, where everything is fixed
    names = {m: f"{spec['study']}-{m}" for m in spec["methods"]}
    studies = {}
    for m, name in names.items():
        try:
            studies[m] = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            if existing:
                raise UserError(f"no study {name} in {masked(spec['storage'])} (nothing to "
                                f"resume or report); check --storage and --study") from None
    for m, study in studies.items():
        have = _definition_of(study, names[m])
        source = f"study {names[m]} in {masked(spec['storage'])}"
        fixed = spec["settings"] if given is None else given["settings"]
        _agree({k: spec["settings"][k] for k in fixed if k != "data_dir"}, have["settings"],
               source)
        _agree(spec["prune"] if given is None else given["prune"], have["prune"], source)
        spec["settings"].update(have["settings"])
        spec["prune"].update(have["prune"])
        if given is None or given["space"]:
            want = (spec["space"][m] if given is None
                    else make_space(m, spec["settings"]))
            if want != have["space"]:
                raise UserError(f"--search / --space differ from the search space of {source}; "
                                f"leave them out to join it")
        spec["space"][m] = have["space"]
    for m in spec["methods"]:
        if m in studies:
            continue
        spec["space"][m] = make_space(m, spec["settings"])
        try:
            study = optuna.create_study(study_name=names[m], storage=storage,
                                        directions=["maximize", "minimize"])
        except optuna.exceptions.DuplicatedStudyError:  # made meanwhile by another process
            return join({**spec, "_given": given}, make_space, storage, existing)
        study.set_user_attr(ATTR, study_definition(m, spec["settings"], spec["space"][m],
                                                   spec["prune"]))
        study.set_user_attr(ATTR + "_creator", spec["worker"])
        studies[m] = study
    return studies


def _definition_of(study, name: str, wait: float = 20.0) -> dict:
    """The sweep definition of an existing study (its creator writes it just after creating
    the study: wait a little for it)."""
    optuna = _optuna()
    deadline = time.time() + wait
    while True:
        have = optuna.load_study(study_name=name, storage=study._storage).user_attrs.get(ATTR)
        if have is not None or time.time() > deadline:
            break
        time.sleep(0.5)
    if not (isinstance(have, dict) and have.get("format") == FORMAT
            and {"settings", "space", "prune"} <= set(have)):
        raise UserError(f"study {name} in the storage is not an antlr-snn sweep; choose "
                        f"another --study")
    if [d.name for d in study.directions] != ["MAXIMIZE", "MINIMIZE"]:
        raise UserError(f"study {name} does not maximise accuracy and minimise spikes")
    return have
