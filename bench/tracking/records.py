"""What a sweep or a trial looks like in MLflow: tags, params, run names, artifacts -- written
and read back.

Shared by the live Tune callback and by `bench sync`, so that a run written by either one is
found and continued by the other, and by `bench.tracking.reader`, so that the reader decodes
exactly what the writers encode: one definition of the tag names, the run kinds and the
flattening of params, not a copy of it in the report. A trial's config carries a ``sweep``
sub-dict (ignored by the training code, see `bench.train.config.split_config`) with the
sweep's name, id, stage unit and dataset name; everything a tag needs is therefore in Tune's
own ``params.json``.

Run layout (the names below; changing any of them makes existing stores unreadable):

- experiments the suite creates or writes to: tag ``mlflow.experimentKind`` =
  ``custom_model_development`` (`EXPERIMENT_KIND_TAG`), which makes MLflow 3's UI open them on
  the runs table ("Model training") rather than on the GenAI traces overview;
- parent run, one per sweep: tags ``bench.kind=sweep``, ``sweep``, ``sweep_id``, ``stages``,
  provenance;
- trial runs: tags ``mlflow.parentRunId``, ``bench.kind=trial``, ``sweep``, ``sweep_id``,
  ``trial_name``, the trial's identity (`TRIAL_CONFIG_TAGS`), provenance; run name
  ``<cell>/<modality>/s<seed> <stage>``, ``<cell>/<modality>/s<seed> <top-1>% <stage>`` once an
  epoch is logged (`trial_run_name`: the UI shows run names without any column chosen); params = the whole
  config flattened (``sweep.name``, ...) as strings (`param_strings`); metrics per epoch with
  ``step=epoch`` (``val_top1`` a fraction, ``val_top1_pct`` the same in percent, the report's
  unit); dataset inputs, one per split (`trial_datasets`); artifacts the final epoch's
  ``val_scores.parquet`` and ``metrics.json``;
- leaderboard runs (`bench report`): tags ``leaderboard=true``, ``bench.kind=leaderboard``,
  ``sweep``, ``sweep_id``, ``source``, ``report_time``; the report under ``report/``, tables under
  ``tables/``;
- leaderboard entry runs, children of a leaderboard run, one per aggregated (cell, modality) and
  (cell, modality combination, fusion rule) of the report: tags ``bench.kind=leaderboard_entry``,
  ``sweep``, ``sweep_id``, ``leaderboard_run_id``, ``report_time``, ``latest`` (``true`` on the
  newest report's entries of a sweep only), ``entry`` (``single`` / ``fusion``), ``cell``,
  ``modality``, ``rule``; metrics in percent (``top1_pct``, ...) and cost (``params``, ...).
  `LEADERBOARD_FILTER` is the MLflow search filter that shows exactly the newest entries.

Reading back (`parse_trial_params`, `parse_trial_tags`) undoes the string conversion once, by
the types of `bench.train.config.TrainConfig`, so no reader re-parses ``"None"`` or ``"1e-05"``.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from bench.storage import RemotePath, location
from bench.tracking.meta import provenance_tags
from bench.train.config import TrainConfig
from bench.train.layout import METRICS_FILE as METRICS
from bench.train.layout import VAL_SCORES_FILE as VAL_SCORES

# Tag names.
KIND_TAG = "bench.kind"            # which kind of run: one of the KIND_* values
SWEEP_TAG = "sweep"                # the sweep's name, on every run of a sweep
SWEEP_KEY = "sweep_id"             # one execution of a sweep (a name run twice has two)
TRIAL_KEY = "trial_name"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial under its sweep in the UI
LEADERBOARD_TAG = "leaderboard"    # "true" on a leaderboard run
NOTE_TAG = "mlflow.note.content"   # MLflow's own: the run's description in the UI
KIND_SWEEP, KIND_TRIAL, KIND_LEADERBOARD = "sweep", "trial", "leaderboard"
KIND_ENTRY = "leaderboard_entry"   # one row of a report's leaderboard, as a run of its own
LEADERBOARD_RUN_TAG = "leaderboard_run_id"   # on an entry: the leaderboard run (= its parent)
REPORT_TIME_TAG = "report_time"    # YYYYmmdd-HHMMSS of the report, on its leaderboard run and entries
LATEST_TAG = "latest"              # "true" on the entries of a sweep's newest report, else "false"
ENTRY_TAG = "entry"                # "single" (one modality) or "fusion" (late fusion of several)

# MLflow 3's own experiment tag: which product its UI opens an experiment in. The value is one
# of its UI's ExperimentKind values; "custom_model_development" is "Model training".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

# The MLflow search filter of the newest report's leaderboard entries (of every sweep; add
# ``and tags.sweep = 'NAME'`` for one), as typed into the UI's search box.
LEADERBOARD_FILTER = f"tags.{KIND_TAG} = '{KIND_ENTRY}' and tags.{LATEST_TAG} = 'true'"
TRIALS_FILTER = f"tags.{KIND_TAG} = '{KIND_TRIAL}'"

# Views of the runs table stored with the experiment, as MLflow's UI stores the views a person
# shares: experiment tag ``mlflow.sharedViewState.<key>`` = the view's state (filter, sort,
# visible columns) as JSON; the UI opens one at ``#/experiments/<id>/runs?viewStateShareKey=<key>``.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LEADERBOARD_VIEW, TRIALS_VIEW = "leaderboard", "trials"


def _col(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"       # the UI's column id: attributes / metrics / params / tags


def ui_views() -> dict[str, dict[str, Any]]:
    """key -> view state: ``leaderboard`` (the newest entries, best top-1 first, with their
    interval, seeds and cost) and ``trials`` (every trial, best top-1 first, with its identity)."""
    # what a row is (cell, modality, rule, stage) and its score fit a 1200-px window; the cost
    # metrics (params, macs_per_clip, train_clips_per_s) are on every entry run, a column away
    entry_metrics = ("top1_pct", "top1_ci_low_pct", "top1_ci_high_pct", "seeds")
    trial_cols = [_col("metrics", "val_top1_pct"), _col("metrics", "best_val_top1_pct"), _col("metrics", "epoch"),
                  *(_col("tags", k) for k in ("cell", "modality", "seed", "stage")), _col("attributes", "Dataset")]
    return {
        LEADERBOARD_VIEW: {"searchFilter": LEADERBOARD_FILTER, "orderByKey": _col("metrics", "top1_pct"),
                           "orderByAsc": False,
                           "selectedColumns": [*(_col("metrics", m) for m in entry_metrics),
                                               *(_col("tags", k) for k in ("cell", "modality", "rule", "stage")),
                                               _col("attributes", "Dataset")]},
        TRIALS_VIEW: {"searchFilter": TRIALS_FILTER, "orderByKey": _col("metrics", "val_top1_pct"), "orderByAsc": False,
                      "selectedColumns": trial_cols},
    }

# The trial tags copied from its config (`trial_tags`), read back by `parse_trial_tags`.
TRIAL_CONFIG_TAGS = ("sweep", "unit", "cell", "modality", "seed", "dataset", "dataset_format", "stage",
                     "preset", "synthetic")
_TAG_TYPES: dict[str, type] = {"seed": int, "synthetic": bool}

EPOCH_METRIC = "epoch"             # its step is the epoch; its presence marks an epoch as logged
TOP1_METRIC = "val_top1"           # a fraction, as the trainer reports it
PCT_SUFFIX = "_pct"                # ``val_top1_pct``: the same metric in percent (the report's unit)
PCT_METRICS = ("val_top1", "val_top5", "best_val_top1")
PCT_DIGITS = 3                     # decimals of a percent metric
MAX_PARAM_LEN = 6000               # MLflow's limit on a param value
SEP = "."                          # nested config keys: ``sweep.name``

# Where a leaderboard run keeps the report's files and its tables (``bench ui`` links to them).
REPORT_DIR = "report"
TABLES_DIR = "tables"


# ----------------------------------------------------------------------------- keys and tags

def parent_key(sweep_id: str) -> dict[str, str]:
    return {SWEEP_KEY: sweep_id, KIND_TAG: KIND_SWEEP}


def parent_tags(*, name: str, stages: list[str], spec_file: str | None = None) -> dict[str, str]:
    tags = {SWEEP_TAG: name, "stages": ",".join(stages), **provenance_tags()}
    if spec_file:
        tags["sweep_file"] = spec_file
    return tags


def trial_key(config: Mapping[str, Any], trial_name: str) -> dict[str, str]:
    sweep = config.get("sweep") or {}
    return {SWEEP_KEY: str(sweep.get("id", "")), TRIAL_KEY: trial_name, KIND_TAG: KIND_TRIAL}


def is_synthetic(root: str | None) -> bool:
    return bool(root) and (Path(root) / "SYNTHETIC.json").is_file()


def trial_tags(config: Mapping[str, Any], *, trial_id: str, parent_run_id: str | None) -> dict[str, str]:
    sweep = config.get("sweep") or {}
    tags = {
        "trial_id": trial_id,
        SWEEP_TAG: str(sweep.get("name", "")),
        "unit": str(sweep.get("unit", "")),
        "cell": str(config.get("cell")),
        "modality": str(config.get("modality")),
        "seed": str(config.get("seed")),
        "dataset": str(sweep.get("dataset") or config.get("dataset")),
        "dataset_format": str(config.get("dataset")),
        "stage": str(config.get("stage")),
        "preset": str(config.get("preset")),
        "synthetic": str(is_synthetic(config.get("root"))).lower(),
        **provenance_tags(),
    }
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    return tags


def trial_run_name(config: Mapping[str, Any], top1: float | None = None) -> str:
    """``a/rgb/s0 pretrain``, then ``a/rgb/s0 85.4% pretrain`` (``top1`` a fraction): what a trial
    is and how well it does, in the first characters the UI's run-name column shows (about 20;
    the stage, last, is the one a long cell name pushes out). Not a key: two trials of a search
    share it; the ``trial_name`` tag tells them apart."""
    who = f"{config.get('cell')}/{config.get('modality')}/s{config.get('seed')}"
    if top1 is not None and not math.isnan(top1):
        who += f" {100.0 * top1:.1f}%"
    return f"{who} {config.get('stage')}"


def pct_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """``val_top1_pct`` (& co) for the accuracy fractions in ``metrics``, rounded to 0.001 points
    (what the UI's cells show uncut; the fraction keeps every digit)."""
    return {k + PCT_SUFFIX: round(100.0 * float(v), PCT_DIGITS) for k, v in metrics.items() if k in PCT_METRICS}


def leaderboard_tags(*, sweep: str, sweep_id: str, source: str, summary_md: str = "",
                     report_time: str = "") -> dict[str, str]:
    tags = {LEADERBOARD_TAG: "true", SWEEP_TAG: sweep, SWEEP_KEY: sweep_id, KIND_TAG: KIND_LEADERBOARD,
            "source": source[:5000], **provenance_tags()}
    if report_time:
        tags[REPORT_TIME_TAG] = report_time
    if summary_md:
        tags[NOTE_TAG] = summary_md[:60000]
    return tags


def leaderboard_run_name(sweep: str, stamp: str) -> str:
    """``leaderboard-<sweep>-<YYYYmmdd-HHMMSS>``: a new run per report (see `bench.tracking.leaderboard`)."""
    return f"leaderboard-{sweep}-{stamp}"


def entry_tags(*, sweep: str, sweep_id: str, leaderboard_run_id: str, report_time: str,
               identity: Mapping[str, Any]) -> dict[str, str]:
    """A leaderboard entry run's tags: what finds it (`LEADERBOARD_FILTER`) and what it is. Not
    nested under the leaderboard run (no ``mlflow.parentRunId``): MLflow's runs table folds
    children behind their parent's expander, so the filter would show one folded row."""
    return {KIND_TAG: KIND_ENTRY, SWEEP_TAG: sweep, SWEEP_KEY: sweep_id, LEADERBOARD_RUN_TAG: leaderboard_run_id,
            REPORT_TIME_TAG: report_time, LATEST_TAG: "true",
            **{k: str(v) for k, v in identity.items()}}


def is_leaderboard(tags: Mapping[str, str]) -> bool:
    return tags.get(LEADERBOARD_TAG) == "true"


def is_entry(tags: Mapping[str, str]) -> bool:
    return tags.get(KIND_TAG) == KIND_ENTRY


def is_trial(tags: Mapping[str, str]) -> bool:
    """A trial run; also one from before ``bench.kind`` (it had ``cell`` and ``modality``)."""
    kind = tags.get(KIND_TAG)
    return (kind == KIND_TRIAL or ("cell" in tags and "modality" in tags)) and \
        not is_leaderboard(tags) and kind not in (KIND_SWEEP, KIND_ENTRY)


def is_parent(tags: Mapping[str, str]) -> bool:
    """A sweep's parent run; also one from before ``bench.kind`` (a ``sweep`` tag, no trial's)."""
    return tags.get(KIND_TAG) == KIND_SWEEP or (SWEEP_TAG in tags and not is_trial(tags) and not is_leaderboard(tags)
                                                 and not is_entry(tags))


# ----------------------------------------------------------------------------- params

def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every config field (hyperparameters, data, network, execution), ``sweep.*`` included."""
    return dict(config)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"sweep": {"name": x}}`` -> ``{"sweep.name": x}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + SEP))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`flatten` undone. A key that cannot nest (``a`` is a value and ``a.b`` exists) stays flat."""
    out: dict[str, Any] = {}
    for key in sorted(flat, key=lambda k: k.count(SEP)):     # shallow keys first: ``a`` before ``a.b``
        *parents, leaf = key.split(SEP)
        node: Any = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        if isinstance(node, dict):
            node[leaf] = flat[key]
        else:
            out[key] = flat[key]
    return out


def param_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """What MLflow stores for ``params``: flattened, every value ``str()`` (None -> ``"None"``),
    cut at `MAX_PARAM_LEN`."""
    return {k: ("None" if v is None else str(v))[:MAX_PARAM_LEN] for k, v in flatten(params).items()}


@functools.cache
def _train_field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)      # the module's annotations are strings


def _as_bool(s: str) -> bool | None:
    low = s.strip().lower()
    return low == "true" if low in ("true", "false") else None


def _as_int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        f = _as_float(s)
        return int(f) if f is not None and f.is_integer() else None


def _as_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


# Tried in this order when a field allows several types; any other type keeps the string.
_PARSERS: dict[Any, Any] = {bool: _as_bool, int: _as_int, float: _as_float}


def _parse_as(value: str, hint: Any) -> Any:
    """``value`` (as `param_strings` wrote it) as type ``hint``; unparseable -> the string."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    kinds = [t for t in options if t is not type(None)]
    if value == "None" and (type(None) in options or str not in kinds):
        return None                     # str(None): only a plain `str` field can mean the text
    for t in sorted((t for t in kinds if t in _PARSERS), key=list(_PARSERS).index):
        parsed = _PARSERS[t](value)
        if parsed is not None:
            return parsed
    return value


def parse_trial_params(params: Mapping[str, str]) -> dict[str, Any]:
    """A trial run's params (MLflow's flat strings) back as the config dict the trial had.

    Fields of `TrainConfig` by their annotated type (``"None"`` -> None where None is allowed,
    ``"1e-05"`` -> float, ``"True"`` -> bool); nested keys (``sweep.*``) as dicts again; any
    other key -- driver keys (``storage_path``, ...), the ``sweep`` dict's values, fields of an
    older or newer `TrainConfig` -- stays the string MLflow holds."""
    hints = _train_field_types()
    typed = {k: _parse_as(v, hints[k]) if k in hints and isinstance(v, str) else v for k, v in params.items()}
    return unflatten(typed)


def parse_trial_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """A trial run's tags with those copied from its config (`TRIAL_CONFIG_TAGS`) typed: a value
    written from a missing field (``"None"``, ``""``) -> None, ``seed`` int, ``synthetic`` bool.
    Every other tag stays a string."""
    out: dict[str, Any] = dict(tags)
    for k in TRIAL_CONFIG_TAGS:
        if k not in tags:
            continue
        v = tags[k]
        out[k] = None if v in ("", "None") else _parse_as(v, _TAG_TYPES.get(k, str))
    return out


# ----------------------------------------------------------------------------- artifacts

def final_files(checkpoint_dir: str | Path | RemotePath | None) -> list[Path | RemotePath]:
    if not checkpoint_dir:
        return []
    d = location(checkpoint_dir)
    return [d / VAL_SCORES, d / METRICS]


def node_tags(trial_dir: str | Path | RemotePath | None) -> dict[str, str]:
    """Where the trial ran (the last start), from ``node.json`` written by the trial wrapper."""
    import json

    if not trial_dir:
        return {}
    f = location(trial_dir) / "node.json"
    try:
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return {}
    if not lines:
        return {}
    last = lines[-1]
    return {"node_id": str(last.get("node_id", "")), "node_ip": str(last.get("node_ip", "")),
            "hostname": str(last.get("hostname", "")), "starts": str(len(lines))}
