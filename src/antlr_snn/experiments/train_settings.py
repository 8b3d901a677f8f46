"""The settings of ``antlr-snn train``: ``config.json`` and ``--config`` files read and
checked, flags over saved settings, and where each neuron and loss setting acts
(:data:`APPLIES`); every check a one-line :class:`~antlr_snn.errors.UserError`.

Example:
    >>> cfg = _validated({"method": "timing", "latency_beta": 0.3})
    >>> cfg.latency_beta, cfg.preset["decision"]
    (0.3, 'earliest_spike')
"""
from __future__ import annotations

import math
from dataclasses import fields

from antlr_snn.checkpoints import is_int, is_number, shown
from antlr_snn.checks import is_real
from antlr_snn.errors import DataNotFound, UserError
from antlr_snn.training import ARCHS, EVENT_DATASETS, PRESETS, TrainConfig

EMBEDDED_EPOCHS = 2  # default epochs on the embedded 4,000-digit sets (a few minutes on 2 cores)
HYPER = ("method", "dataset", "data_dir", "hidden", "num_steps", "epochs", "batch_size", "lr",
         "grad_clip", "single_spike", "seed", "trials", "max_train", "max_eval", "arch",
         "channels", "lr_step", "lr_gamma", "t_max", "lambda_act", "lambda_tim", "threshold",
         "surrogate_width", "latency_beta", "at_least_one_weight", "target_correct",
         "target_wrong", "no_spike_strength", "spike_reg", "spike_budget",
         "output_vstar_min")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


# the JSON types of config.json's entries (TrainConfig fields); None where "or null" is allowed
SAVED_TYPES = {
    "method": (lambda v: isinstance(v, str), "a string"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "data_dir": (lambda v: v is None or isinstance(v, str), "a folder name or null"),
    "arch": (lambda v: v in ARCHS, f"one of {', '.join(ARCHS)}"),
    "channels": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(is_int, v)),
                 "a list of two integers"),
    "hidden": (lambda v: isinstance(v, list) and all(map(is_int, v)),
               "a list of integers"),
    "num_steps": (is_int, "an integer"), "epochs": (is_int, "an integer"),
    "batch_size": (is_int, "an integer"), "seed": (is_int, "an integer"),
    "trials": (is_int, "an integer"),
    "lr_step": (lambda v: is_int(v, 1), "a positive integer"),
    "t_max": (lambda v: is_int(v, 1), "a positive integer"),
    "lr": (is_number, "a number"), "grad_clip": (is_number, "a number"),
    "lr_gamma": (lambda v: is_number(v) and math.isfinite(v) and v > 0, "a number > 0"),
    "single_spike": (lambda v: isinstance(v, bool), "true or false"),
    **{k: (is_number, "a number") for k in (
        "lambda_act", "lambda_tim", "threshold", "surrogate_width", "latency_beta",
        "at_least_one_weight", "target_wrong", "no_spike_strength", "spike_reg",
        "spike_budget")},
    "target_correct": (lambda v: v is None or is_number(v), "a number or null"),
    "max_train": (lambda v: v is None or is_int(v), "an integer or null"),
    "max_eval": (lambda v: v is None or is_int(v), "an integer or null"),
    "output_vstar_min": (lambda v: v is None or (is_number(v) and math.isfinite(v) and v > 0),
                         "a number > 0 or null"),
}


def check_saved_config(saved, path: str) -> dict:
    """``saved`` (config.json of a run) if it is a JSON object whose known entries have the
    right types; else a one-line ``ValueError`` naming ``path`` and the bad entry.

    >>> check_saved_config({"hidden": "abc"}, "run/config.json")
    Traceback (most recent call last):
    antlr_snn.errors.UserError: run/config.json: bad "hidden" (must be a list of integers, got 'abc')
    """
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a run configuration (a JSON object), "
                         f"but a JSON {type(saved).__name__}")
    for key, (test, what) in SAVED_TYPES.items():
        if key in saved and not test(saved[key]):
            raise UserError(f'{path}: bad "{key}" (must be {what}, got {shown(saved[key])})')
    return saved


def resolve_config(args, saved: dict | None, saved_path: str = "config.json") -> TrainConfig:
    """Flags over the saved run (``--resume``, from ``saved_path``) over the defaults; all
    values validated. A bad saved value gives an error naming ``saved_path``."""
    for flag, v in (("--checkpoint-every", args.checkpoint_every), ("--workers", args.workers)):
        _check(v >= 0, f"{flag} must be >= 0, got {v}")
    given = {k: getattr(args, k) for k in HYPER if getattr(args, k) is not None}
    if getattr(args, "config", None):
        if getattr(args, "resume", False):
            raise UserError("--config starts a run from a settings file and --resume continues "
                            "the run in --out with its own config.json: give one of them")
        given = {**read_settings(args.config), **given}
    if saved is not None:
        check_saved_config(saved, saved_path)
        for k, v in given.items():
            if k in saved and saved[k] != v:
                flag = "--" + k.replace("_", "-")
                raise UserError(f"{flag} {v} differs from the run being resumed ({saved[k]}); "
                                 f"leave it out or use another --out")
        given = {**{k: v for k, v in saved.items() if k in {f.name for f in fields(TrainConfig)}},
                 **given}
        try:  # every flag given equals the saved value here: a failed check is the file's
            return _validated(given)
        except ValueError as exc:
            raise UserError(f"{saved_path}: bad run configuration ({exc})") from None
    return _validated(given)


def read_settings(path: str, flag: str = "--config") -> dict:
    """The run settings in the JSON file ``path`` (``--config``, or the option ``flag``): a
    JSON object of :class:`TrainConfig` fields, each of the right type and a valid run on its
    own (missing fields take their defaults); else one line naming the file and the problem."""
    import json
    try:
        with open(path, encoding="utf-8") as fh:
            settings = json.load(fh)
    except FileNotFoundError:
        raise DataNotFound(f"{flag}: no settings file {path}") from None
    except IsADirectoryError:
        raise UserError(f"{flag}: {path} is a folder; give its config.json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = getattr(exc, "msg", None) or exc.__class__.__name__
        raise UserError(f"{flag}: {path} is not valid JSON ({reason})") from None
    if isinstance(settings, dict) and isinstance(settings.get("front"), list):
        raise UserError(f"{flag}: {path} is a sweep's front, with several points; give one "
                        f"point's config_file")
    check_saved_config(settings, path)
    unknown = sorted(set(settings) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UserError(f"{flag}: {path} has unknown setting(s) {', '.join(unknown)} (it "
                        f"holds the fields of a run's config.json)")
    try:
        _validated(settings)
    except ValueError as exc:
        raise UserError(f"{flag}: {path}: bad run settings ({exc})") from None
    return settings


def _validated(given: dict) -> TrainConfig:
    dataset = given.get("dataset", "mnist")
    embedded = dataset == "nmnist-sim" or (dataset == "mnist" and not given.get("data_dir"))
    defaults = {"num_steps": 300 if dataset in EVENT_DATASETS else 100,
                "epochs": EMBEDDED_EPOCHS if embedded else 20, "single_spike": False,
                "hidden": [] if given.get("arch") == "conv" else [800]}
    cfg = TrainConfig(**{**defaults, **given})
    from antlr_snn.data import DATASETS
    _check(cfg.method in PRESETS, f"unknown method {cfg.method!r}; choose one of "
           f"{', '.join(PRESETS)}")
    _check(cfg.dataset in DATASETS, f"unknown data set {cfg.dataset!r}; choose one of "
           f"{', '.join(DATASETS)}")
    _check(not (cfg.dataset == "nmnist-sim" and cfg.data_dir is not None),
           "--data-dir: nmnist-sim is generated, it takes no data folder")
    for flag, v in (("--epochs", cfg.epochs), ("--trials", cfg.trials),
                    ("--num-steps", cfg.num_steps), ("--batch-size", cfg.batch_size),
                    ("--max-train", cfg.max_train), ("--max-eval", cfg.max_eval)):
        _check(v is None or v >= 1, f"{flag} must be a positive integer, got {v}")
    _check(all(h >= 1 for h in cfg.hidden), f"--hidden sizes must be positive, got {cfg.hidden}")
    _check(cfg.arch == "conv" or len(cfg.hidden) >= 1, "--hidden needs at least one size for "
           "--arch fc")
    _check(all(c >= 1 for c in cfg.channels), f"--channels must be positive, got {cfg.channels}")
    _check(math.isfinite(cfg.lr) and 0 < cfg.lr <= 10, f"--lr must be in (0, 10], got {cfg.lr}")
    _check(math.isfinite(cfg.grad_clip) and cfg.grad_clip >= 0,
           f"--grad-clip must be >= 0 (0 disables), got {cfg.grad_clip}")
    _check(cfg.output_vstar_min is None or (math.isfinite(cfg.output_vstar_min)
                                            and cfg.output_vstar_min > 0),
           f"--output-vstar-min must be > 0, got {cfg.output_vstar_min}")
    _check(0 <= cfg.seed and cfg.seed + cfg.trials <= 2 ** 32,
           f"--seed must be in [0, 2**32 - trials], got {cfg.seed}")
    _check(cfg.num_steps <= 100000, f"--num-steps must be <= 100000, got {cfg.num_steps}")
    _check(is_int(cfg.lr_step, 1), f"--lr-step must be a positive integer, got {cfg.lr_step}")
    _check(is_int(cfg.t_max, 1), f"--t-max must be a positive integer, got {cfg.t_max}")
    if dataset not in EVENT_DATASETS:
        _check(cfg.num_steps >= cfg.t_max, f"--num-steps must be >= {cfg.t_max} for the latency "
               f"code (pixels spike in the first {cfg.t_max} steps), got {cfg.num_steps}")
    check_neurons_and_losses(cfg)
    return cfg


#: The methods each neuron or loss setting acts on; elsewhere it must keep its default.
APPLIES = {
    "lambda_act": ("antlr",), "lambda_tim": ("antlr",),
    "latency_beta": ("antlr", "timing"), "at_least_one_weight": ("antlr",),
    "target_correct": ("activation", "bptt"), "target_wrong": ("activation", "bptt"),
    "no_spike_strength": ("timing",),
    "spike_reg": ("antlr", "activation", "bptt"), "spike_budget": ("antlr", "activation", "bptt"),
    "surrogate_width": ("antlr", "activation", "bptt"),
    "output_vstar_min": ("antlr", "timing"),
}
_POSITIVE = ("threshold", "surrogate_width", "latency_beta")  # > 0; the others >= 0


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_neurons_and_losses(cfg: TrainConfig) -> None:
    """One-line ``UserError`` for a neuron or loss setting out of range, or set (away from its
    default) for a method it does not act on (:data:`APPLIES`)."""
    _check(is_real(cfg.lr_gamma) and 0 < cfg.lr_gamma <= 1,
           f"--lr-gamma must be in (0, 1], got {cfg.lr_gamma}")
    defaults = TrainConfig()
    for name in ("lambda_act", "lambda_tim", "threshold", "surrogate_width", "latency_beta",
                 "at_least_one_weight", "target_correct", "target_wrong", "no_spike_strength",
                 "spike_reg", "spike_budget"):
        v = getattr(cfg, name)
        if v is None:  # target_correct: the data set's default
            continue
        strict = name in _POSITIVE or name == "target_correct"
        _check(is_real(v) and (v > 0 if strict else v >= 0),
               f"{flag(name)} must be a finite number {'>' if strict else '>='} 0, got {v}")
        if name in APPLIES and cfg.method not in APPLIES[name] and v != getattr(defaults, name):
            raise UserError(f"{flag(name)} acts on --method {' / '.join(APPLIES[name])} only, "
                            f"not {cfg.method}; leave it out")
    if cfg.method == "antlr":
        _check(cfg.lambda_tim > 0, "--lambda-tim must be > 0 for antlr: its latency loss "
               "has only a timing gradient")
        _check(cfg.lambda_act > 0 or (cfg.at_least_one_weight == 0 and cfg.spike_reg == 0),
               "--lambda-act 0 drops the activation channel, through which the "
               "at-least-one-spike term and --spike-reg act: set --at-least-one-weight 0 and "
               "--spike-reg 0, or --lambda-act > 0")
    _check(cfg.spike_reg > 0 or cfg.spike_budget == 0,
           "--spike-budget needs --spike-reg > 0 (the regulariser's weight)")
