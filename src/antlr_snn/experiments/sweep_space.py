"""The search space of ``antlr-snn sweep``: which training settings are searched, over what.

A space maps a setting (a :class:`~antlr_snn.training.TrainConfig` field, plus ``depth``, the
number of hidden layers, whose widths ``hidden`` sets one by one) to a spec:

* a number: the setting is fixed to it;
* ``{"low": a, "high": b, "log": true|false}``: a range (integers for ``hidden``, ``depth``,
  ``lr_step``, ``t_max``), sampled log-uniformly with ``"log": true``;
* ``{"choices": [a, b, ...]}``: one of these values.

On the command line ``--search NAME=SPEC`` writes the same as ``a:b``, ``a:b:log``, ``a,b,c``
or ``a``; ``--space FILE`` reads a JSON object of specs. Both go over :func:`default_space`.
A setting acts only on the methods of :data:`antlr_snn.experiments.train_settings.APPLIES`; for the
others it keeps its default. The table of defaults is in docs/training.md.

Example:
    >>> base = {"dataset": "mnist", "epochs": 4, "num_steps": 100, "arch": "fc"}
    >>> space = resolve_space(base, ["lr=1e-4:1e-2:log", "threshold=1.5"], None)
    >>> space["lr"], space["threshold"], space["lr_step"]
    ({'low': 0.0001, 'high': 0.01, 'log': True}, 1.5, {'low': 1, 'high': 4, 'log': False})
    >>> sorted(for_method(space, "timing", base))[:4]
    ['depth', 'hidden', 'latency_beta', 'lr']
"""
from __future__ import annotations

import json

from antlr_snn.checks import is_int, is_real, shown
from antlr_snn.errors import DataNotFound, UserError
from antlr_snn.training import EVENT_DATASETS

#: Settings with integer values.
INTEGER = ("hidden", "depth", "lr_step", "t_max")
#: Every setting the sweep can search, in sampling order.
NAMES = ("lr", "lr_step", "lr_gamma", "depth", "hidden", "lambda_act", "lambda_tim",
         "latency_beta", "at_least_one_weight", "target_correct", "target_wrong",
         "no_spike_strength", "spike_reg", "spike_budget", "threshold", "surrogate_width",
         "t_max", "output_vstar_min")


def default_space(base: dict) -> dict:
    """The default space for the sweep's fixed settings ``base`` (dataset, epochs,
    num_steps, arch): ranges around the paper's values, wide enough to trade accuracy for
    spikes."""
    event = base.get("dataset") in EVENT_DATASETS
    epochs = int(base.get("epochs") or 1)
    return {
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "lr_step": {"low": 1, "high": epochs, "log": False} if epochs > 1 else 1,
        "lr_gamma": {"low": 0.1, "high": 1.0, "log": False},
        "depth": 0 if base.get("arch") == "conv" else 1,
        "hidden": {"low": 32, "high": 800, "log": True},
        "lambda_act": {"low": 0.1, "high": 10.0, "log": True},
        "lambda_tim": {"low": 0.1, "high": 10.0, "log": True},
        "latency_beta": {"low": 0.05, "high": 1.0, "log": True},
        "at_least_one_weight": {"low": 0.005, "high": 0.5, "log": True},
        "target_correct": ({"low": 2.0, "high": 20.0, "log": True} if event
                           else {"low": 1.0, "high": 5.0, "log": True}),
        "target_wrong": {"low": 0.0, "high": 0.5, "log": False},
        "no_spike_strength": {"low": 1.0, "high": 1000.0, "log": True},
        "spike_reg": {"low": 1e-5, "high": 1e-1, "log": True},
        "spike_budget": 0.0,
        "threshold": {"low": 0.5, "high": 2.0, "log": True},
        "surrogate_width": {"low": 1.0, "high": 10.0, "log": True},
        "t_max": {"low": 8, "high": min(48, int(base.get("num_steps") or 100)), "log": False},
        # the output layer's V* floor: the remedy found for event data (reproduction.md, Fig. 8)
        "output_vstar_min": ({"low": 0.01, "high": 0.3, "log": True} if event else 0.01),
    }


def parse_spec(name: str, text: str):
    """The spec written ``a:b``, ``a:b:log``, ``a,b,c`` or ``a`` (``--search NAME=SPEC``)."""
    def number(t):
        try:
            v = float(t)
        except ValueError:
            raise UserError(f"--search {name}={text}: {t!r} is not a number") from None
        return int(v) if name in INTEGER and v.is_integer() else v
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise UserError(f"--search {name}={text}: a range is LOW:HIGH or LOW:HIGH:log")
        return {"low": number(parts[0]), "high": number(parts[1]), "log": len(parts) == 3}
    if "," in text:
        return {"choices": [number(t) for t in text.split(",")]}
    return number(text)


def read_space_file(path: str) -> dict:
    """``--space FILE``: a JSON object of specs; one-line errors naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            space = json.load(fh)
    except FileNotFoundError:
        raise DataNotFound(f"--space: no file {path}") from None
    except (ValueError, IsADirectoryError) as exc:
        raise UserError(f"--space: {path} is not a JSON file ({exc.__class__.__name__})") from None
    if not isinstance(space, dict):
        raise UserError(f"--space: {path} must hold a JSON object of setting: spec")
    return {k: (parse_spec(k, v) if isinstance(v, str) else v) for k, v in space.items()}


def resolve_space(base: dict, searches, space_file) -> dict:
    """:func:`default_space` with ``space_file``'s specs, then ``--search`` strings, over
    it; every spec checked (:func:`check_spec`)."""
    space = default_space(base)
    given = dict(read_space_file(space_file)) if space_file else {}
    for item in searches or ():
        name, sep, text = item.partition("=")
        if not sep or not text:
            raise UserError(f"--search {item!r}: write NAME=SPEC, e.g. lr=1e-4:1e-2:log")
        given[name.strip()] = parse_spec(name.strip(), text.strip())
    for name, spec in given.items():
        if name not in NAMES:
            raise UserError(f"unknown search setting {name!r}; choose from {', '.join(NAMES)}")
        space[name] = check_spec(name, spec)
    return space


def check_spec(name: str, spec):
    """``spec`` normalised (``log`` always present), or a one-line ``UserError``."""
    what = f"search setting {name!r}"
    integer = name in INTEGER

    def value_ok(v):
        return is_int(v) if integer else is_real(v)
    kind = "an integer" if integer else "a finite number"
    kinds = "integers" if integer else "finite numbers"
    if isinstance(spec, dict) and set(spec) <= {"low", "high", "log"} and {"low", "high"} <= set(spec):
        lo, hi, log = spec["low"], spec["high"], spec.get("log", False)
        if not (value_ok(lo) and value_ok(hi)):
            raise UserError(f"{what}: low and high must be {kinds}, got {shown(spec)}")
        if not isinstance(log, bool):
            raise UserError(f"{what}: log must be true or false, got {shown(log)}")
        if lo > hi:
            raise UserError(f"{what}: low {lo} is above high {hi}")
        if log and lo <= 0:
            raise UserError(f"{what}: a log range needs low > 0, got {lo}")
        return {"low": lo, "high": hi, "log": log}
    if isinstance(spec, dict) and set(spec) == {"choices"}:
        ch = spec["choices"]
        if not (isinstance(ch, list) and ch and all(map(value_ok, ch))):
            raise UserError(f"{what}: choices must be a non-empty list of {kinds}, got "
                            f"{shown(ch)}")
        return {"choices": list(ch)}
    if value_ok(spec):
        return spec
    raise UserError(f"{what}: {shown(spec)} is not {kind}, a range {{low, high, log}} or "
                    f"{{choices}}")


def applies(name: str, method: str, base: dict, space: dict) -> bool:
    """Whether setting ``name`` acts on ``method`` in the sweep with fixed settings ``base``."""
    from antlr_snn.experiments.train_settings import APPLIES
    if name == "t_max":
        return base.get("dataset") not in EVENT_DATASETS
    if name == "hidden":
        return space.get("depth") != 0
    return method in APPLIES.get(name, (method,))


def for_method(space: dict, method: str, base: dict) -> dict:
    """The part of ``space`` that acts on ``method``."""
    return {k: v for k, v in space.items() if applies(k, method, base, space)}


def values(spec) -> list:
    """The extreme values of a spec (for checks)."""
    if isinstance(spec, dict):
        return spec["choices"] if "choices" in spec else [spec["low"], spec["high"]]
    return [spec]


def middle(name: str, spec):
    """A value inside a spec, away from its ends (the others' value while one is checked)."""
    if not isinstance(spec, dict):
        return spec
    if "choices" in spec:
        return spec["choices"][0]
    lo, hi = spec["low"], spec["high"]
    mid = (lo * hi) ** 0.5 if spec["log"] else (lo + hi) / 2
    base = "hidden" if name.startswith("hidden_") else name
    return round(mid) if base in INTEGER else mid


def settings_at(space: dict, pick) -> dict:
    """TrainConfig settings from ``space`` with ``pick(name, spec)`` choosing each searched
    value (``pick`` gets ``hidden_0``, ``hidden_1``, ... for the widths)."""
    chosen = {}
    for name in NAMES:
        if name not in space or name == "hidden":
            continue
        spec = space[name]
        chosen[name] = pick(name, spec) if isinstance(spec, dict) else spec
    depth = chosen.pop("depth", 1)
    widths = space.get("hidden", 800)
    chosen["hidden"] = [pick(f"hidden_{i}", widths) if isinstance(widths, dict) else widths
                        for i in range(depth)]
    return chosen


def suggest(trial, name: str, spec):
    """``trial.suggest_*`` for one searched value."""
    if "choices" in spec:
        return trial.suggest_categorical(name, spec["choices"])
    base = name.split("_")[0] if name.startswith("hidden_") else name
    if base in INTEGER:
        return trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
    return trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])


def check_space(space: dict, method: str, base: dict, validate) -> None:
    """Every extreme value of every setting of ``space`` (for ``method``) is a valid run:
    ``validate(settings)`` (the checks of ``antlr-snn train``) must accept it with the others
    at their middle values (:func:`middle`); else one line naming the setting."""
    lowest = settings_at(space, middle)
    for name, spec in space.items():
        for v in values(spec):
            trial = dict(lowest)
            if name == "hidden":
                trial["hidden"] = [v] * len(trial["hidden"])
            elif name == "depth":
                trial["hidden"] = [values(space.get("hidden", 800))[0]] * v
            else:
                trial[name] = v
            try:
                validate({**base, "method": method, **trial})
            except UserError as exc:
                raise UserError(f"search setting {name!r} = {v} cannot train {method}: "
                                f"{exc}") from None


def params_of(space: dict, settings: dict, where: str) -> dict:
    """The trial parameters (the names :func:`settings_at` picks) that reproduce the run
    ``settings`` (every field of a :class:`~antlr_snn.training.TrainConfig`) in ``space``:
    its value of every searched setting, which must lie in the searched range or among the
    choices; else one line naming ``where`` and the setting. Fixed settings of the space are
    not compared: the sweep's own apply.

    >>> space = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "threshold": 1.5, "depth": 1,
    ...          "hidden": {"low": 32, "high": 800, "log": True}}
    >>> params_of(space, {"lr": 3e-4, "threshold": 1.0, "hidden": [624]}, "f.json")
    {'lr': 0.0003, 'hidden_0': 624}
    >>> params_of(space, {"lr": 0.1, "hidden": [624]}, "f.json")
    Traceback (most recent call last):
    antlr_snn.errors.UserError: f.json: lr = 0.1 lies outside the searched [0.0001, 0.01]
    """
    params = {}

    def take(name, spec, v):
        base = "hidden" if name.startswith("hidden_") else name
        if not (is_int(v) if base in INTEGER else is_real(v)):
            raise UserError(f"{where}: {base} = {shown(v)} is not a value the sweep searches")
        if "choices" in spec:
            if v not in spec["choices"]:
                raise UserError(f"{where}: {base} = {v} is not one of the searched choices "
                                f"{spec['choices']}")
        elif not spec["low"] <= v <= spec["high"]:
            raise UserError(f"{where}: {base} = {v} lies outside the searched "
                            f"[{spec['low']}, {spec['high']}]")
        params[name] = v

    for name in NAMES:
        spec = space.get(name)
        if isinstance(spec, dict) and name not in ("hidden", "depth"):
            take(name, spec, settings.get(name))
    depth = space.get("depth", 1)
    hidden = list(settings.get("hidden") or [])
    if isinstance(depth, dict):
        take("depth", depth, len(hidden))
    elif depth and len(hidden) != depth:
        raise UserError(f"{where}: {len(hidden)} hidden layer(s), the sweep's depth is {depth}")
    if depth and isinstance(space.get("hidden"), dict):
        for i, width in enumerate(hidden):
            take(f"hidden_{i}", space["hidden"], width)
    return params
