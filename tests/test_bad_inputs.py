"""A table of malformed inputs: each ends with exit code 2 and one line naming the problem.

Every case runs the real CLI in-process and checks what a user sees: exit code 2, exactly one
line on stderr (``merge3: error: ...``, no traceback) that names the offending file, key or
tensor, and no damage: a case aimed at an existing run directory leaves every file in it
byte-identical (names, SHA-256, mtimes); a case that would create something (a run directory,
a merged model) creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from merge3.cli import app
from merge3.estimate.synthetic import make_world

runner = CliRunner()


class _Payload:
    """A pickle that creates a folder when unpickled: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def write_malicious_bin(folder: Path, marker: Path) -> None:
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, fh, protocol=2)


# --- the fixtures every case draws from -------------------------------------------------------


@dataclass
class Env:
    root: Path
    tiny: Path
    run: Path  # a finished run of the tiny setting (never modified: cases copy it)
    irt: Path  # a small IRT item file, anchors and responses for the estimate verbs
    marker: Path  # created only if a malicious pickle is ever unpickled
    extra: dict = field(default_factory=dict)


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(folder: Path, edit: Callable[[dict], None]) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


UP = "model.layers.0.mlp.up_proj.weight"


def _broken_models(tiny: Path, root: Path, marker: Path) -> dict[str, Path]:
    """Broken copies of the tiny `add` endpoint (and one broken base)."""
    d = root / "models"
    d.mkdir()
    ft = tiny / "ft-add"
    out = {}

    out["no_config"] = _copy_model(ft, d / "no_config")
    (out["no_config"] / "config.json").unlink()

    out["no_weights"] = _copy_model(ft, d / "no_weights")
    (out["no_weights"] / "model.safetensors").unlink()

    out["bin_only"] = _copy_model(ft, d / "bin_only")
    (out["bin_only"] / "model.safetensors").unlink()
    write_malicious_bin(out["bin_only"], marker)

    out["deeper"] = _copy_model(ft, d / "deeper")
    _edit_config(out["deeper"], num_hidden_layers=3)

    out["wider"] = _copy_model(ft, d / "wider")
    _edit_config(out["wider"], hidden_size=128)

    out["bad_shape"] = _copy_model(ft, d / "bad_shape")
    _edit_tensors(out["bad_shape"], lambda t: t.update({UP: t[UP][:, :48].contiguous()}))

    out["nan"] = _copy_model(ft, d / "nan")

    def poison(t: dict) -> None:
        t[UP] = t[UP].clone()
        t[UP][3, 5] = float("nan")

    _edit_tensors(out["nan"], poison)

    out["missing_tensor"] = _copy_model(ft, d / "missing_tensor")
    _edit_tensors(out["missing_tensor"], lambda t: t.pop(UP))

    out["garbage_weights"] = _copy_model(ft, d / "garbage_weights")
    (out["garbage_weights"] / "model.safetensors").write_bytes(b"\x00\x01not safetensors" * 64)

    out["bad_json"] = _copy_model(ft, d / "bad_json")
    (out["bad_json"] / "config.json").write_text('{"model_type": "llama",')

    out["bad_index"] = _copy_model(ft, d / "bad_index")
    (out["bad_index"] / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {UP: "model-00002-of-00002.safetensors"}})
    )

    out["no_tokenizer"] = _copy_model(tiny / "base", d / "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out["no_tokenizer"] / name).unlink()

    out["base_bin_only"] = _copy_model(tiny / "base", d / "base_bin_only")
    (out["base_bin_only"] / "model.safetensors").unlink()
    write_malicious_bin(out["base_bin_only"], marker)
    return out


def _irt_files(root: Path) -> Path:
    d = root / "irt"
    d.mkdir()
    world = make_world(items_per_task=12, seed=0)
    rng = np.random.default_rng(0)
    world.responses(rng.normal(size=(24, 2)), rng, "ref").save(d / "ref.csv")
    world.responses(rng.normal(size=(3, 2)), rng, "cand").save(d / "cand.csv")
    r = runner.invoke(
        app, ["irt", "fit", str(d / "ref.csv"), "--steps", "5", "--out", str(d / "items.json")]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["extract", "--irt", str(d / "items.json"), "--n", "3", "--out", str(d / "a.json")]
    )
    assert r.exit_code == 0, r.output
    return d


def tiny_config(path: Path, edit: Callable[[dict], None] | None = None, **search) -> Path:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["search"].update(population=4, generations=1, **search)
    data["final"] = {"top_k": 1, "export_best": False}
    if edit:
        edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def env(tiny_dir, tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad")
    marker = root / "PICKLE-RAN"
    run = root / "finished"
    result = runner.invoke(
        app, ["search", str(tiny_config(root / "ok.yaml")), "--run-dir", str(run), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    e = Env(root, tiny_dir, run, _irt_files(root), marker)
    e.extra["models"] = _broken_models(tiny_dir, root, marker)
    return e


# --- the table ----------------------------------------------------------------------------------


@dataclass
class Case:
    """``build(env, tmp)`` returns the CLI arguments; ``needles`` must all be in the one line.

    ``run_dir``: a copy of the finished run the case targets (snapshotted before and after);
    ``absent``: what must not exist afterwards (a run directory or output never created).
    """

    kind: str
    build: Callable[[Env, Path], list[str]]
    needles: Callable[[Env, Path], list[str]]
    run_dir: bool = False
    absent: str | None = None


def _search_with(edit: Callable[[Env, dict], None]) -> Callable[[Env, Path], list[str]]:
    def build(env: Env, tmp: Path) -> list[str]:
        config = tiny_config(tmp / "run.yaml", lambda d: edit(env, d))
        return ["search", str(config), "--run-dir", str(tmp / "new-run"), "--quiet"]

    return build


def _endpoint(name: str) -> Callable[[Env, dict], None]:
    def edit(env: Env, d: dict) -> None:
        d["models"]["endpoints"]["add"] = str(env.extra["models"][name])

    return edit


def _model(name: str) -> Callable[[Env, Path], list[str]]:
    return lambda env, tmp: [str(env.extra["models"][name])]


def _merge_yaml(edit: Callable[[Env, dict], None]) -> Callable[[Env, Path], list[str]]:
    def build(env: Env, tmp: Path) -> list[str]:
        cfg = {
            "merge_method": "task_arithmetic",
            "base_model": str(env.tiny / "base"),
            "models": [
                {"model": str(env.tiny / "ft-add"), "parameters": {"weight": 0.5}},
                {"model": str(env.tiny / "ft-next"), "parameters": {"weight": 0.5}},
            ],
            "parameters": {"lambda": 1.0},
            "dtype": "float32",
        }
        edit(env, cfg)
        path = tmp / "merge.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return ["merge", str(path), "--out", str(tmp / "merged")]

    return build


def _set(key: str, value) -> Callable[[Env, dict], None]:
    def edit(env: Env, d: dict) -> None:
        d[key] = value

    return edit


def _merge_model(i: int, name: str) -> Callable[[Env, dict], None]:
    def edit(env: Env, d: dict) -> None:
        d["models"][i]["model"] = str(env.extra["models"][name])

    return edit


def _file(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return make


def _irt_fit(make: Callable[[Path], Path], *extra: str) -> Callable[[Env, Path], list[str]]:
    return lambda env, tmp: ["irt", "fit", str(make(tmp)), *extra, "--out", str(tmp / "i.json")]


def _estimate(
    anchors: Callable[[Env, Path], Path] | None = None,
    irt: Callable[[Env, Path], Path] | None = None,
) -> Callable[[Env, Path], list[str]]:
    def build(env: Env, tmp: Path) -> list[str]:
        a = anchors(env, tmp) if anchors else env.irt / "a.json"
        i = irt(env, tmp) if irt else env.irt / "items.json"
        r = env.irt / "cand.csv"
        return [
            *("estimate", "--irt", str(i), "--anchors", str(a), "--responses", str(r)),
            *("--estimator", "irt"),
        ]

    return build


def _anchors(edit: Callable[[dict], object]) -> Callable[[Env, Path], Path]:
    def make(env: Env, tmp: Path) -> Path:
        data = json.loads((env.irt / "a.json").read_text())
        data = edit(data) or data
        path = tmp / "anchors.json"
        path.write_text(json.dumps(data))
        return path

    return make


def _evaluate(model: Callable[[Env, Path], str], bench: Callable[[Env, Path], str], *extra):
    return lambda env, tmp: ["evaluate", model(env, tmp), "--benchmark", bench(env, tmp), *extra]


def _items(content: str) -> Callable[[Env, Path], str]:
    def make(env: Env, tmp: Path) -> str:
        (tmp / "items.jsonl").write_text(content)
        return str(tmp / "items.jsonl")

    return make


def _base(env: Env, tmp: Path) -> str:
    return str(env.tiny / "base")


def _add_items(env: Env, tmp: Path) -> str:
    return str(env.tiny / "data" / "add.test.jsonl")


def _in_run(verb: str, damage: Callable[[Path], None] | None = None, *extra: str):
    def build(env: Env, tmp: Path) -> list[str]:
        run = tmp / "run"
        if damage:
            damage(run)
        return [verb, str(run), *extra]

    return build


def _run_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = yaml.safe_load((run / "config.yaml").read_text())
        edit(data)
        (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    return damage


def _overwrite(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return damage


def _models_dir(name: str) -> Callable[[Env, Path], str]:
    return lambda env, tmp: str(env.extra["models"][name])


def _static(*needles: str) -> Callable[[Env, Path], list[str]]:
    return lambda env, tmp: list(needles)


def _named(name: str, *needles: str) -> Callable[[Env, Path], list[str]]:
    return lambda env, tmp: [str(env.extra["models"][name]), *needles]


RESPONSES_OK = "model,t/a,t/b,t/c\nm1,1,0,1\nm2,0,1,1\nm3,1,1,0\n"


def _search_file(make: Callable[[Path], Path]) -> Callable[[Env, Path], list[str]]:
    return lambda env, tmp: ["search", str(make(tmp)), "--run-dir", str(tmp / "new-run")]


def _bad_items(env: Env, d: dict) -> None:
    path = env.root / "bad-items" / "next.search.jsonl"
    path.parent.mkdir(exist_ok=True)
    good = (env.tiny / "data" / "next.search.jsonl").read_text().splitlines()
    path.write_text("\n".join([*good[:4], good[4][:-7], *good[5:]]) + "\n")
    d["benchmark"]["tasks"][1]["search"] = str(path)


CASES: dict[str, Case] = {
    # run configs as files (test_config.py covers the keys) -------------------------------------
    "config-is-a-folder": Case(
        "config",
        _search_file(lambda tmp: tmp),
        lambda env, tmp: [str(tmp), "cannot read the config (IsADirectoryError)"],
        absent="new-run",
    ),
    "config-not-utf8": Case(
        "config",
        _search_file(_file("run.yaml", b"name: \xff\xfe\x00bad\n")),
        _static("run.yaml", "cannot read the config (UnicodeDecodeError)"),
        absent="new-run",
    ),
    "config-empty": Case(
        "config",
        _search_file(_file("run.yaml", "")),
        _static("run.yaml", "must be a mapping of sections, got NoneType"),
        absent="new-run",
    ),
    "config-unset-environment-variable": Case(
        "config",
        _search_with(lambda env, d: d["models"].update(base="${MERGE3_NO_SUCH_VAR}/base")),
        _static("run.yaml", "${MERGE3_NO_SUCH_VAR} is not set"),
        absent="new-run",
    ),
    "config-trust-remote-code-not-a-bool": Case(
        "config",
        _search_with(lambda env, d: d["models"].update(trust_remote_code="please")),
        _static("run.yaml", "models.trust_remote_code", "boolean"),
        absent="new-run",
    ),
    "config-item-file-with-a-broken-line": Case(
        "config",
        _search_with(_bad_items),
        _static("next.search.jsonl:5", "not valid JSON"),
        absent="new-run",
    ),
    # model folders, met by `merge3 search` (nothing may be created) ----------------------------
    "search-endpoint-without-config-json": Case(
        "model",
        _search_with(_endpoint("no_config")),
        _named("no_config", "no config.json"),
        absent="new-run",
    ),
    "search-endpoint-without-weights": Case(
        "model",
        _search_with(_endpoint("no_weights")),
        _named("no_weights", "no .safetensors weights"),
        absent="new-run",
    ),
    "search-endpoint-with-only-a-pickle": Case(
        "model",
        _search_with(_endpoint("bin_only")),
        _named("bin_only", "merge3 reads only safetensors"),
        absent="new-run",
    ),
    "search-base-with-only-a-pickle": Case(
        "model",
        _search_with(
            lambda env, d: d["models"].update(base=str(env.extra["models"]["base_bin_only"]))
        ),
        _named("base_bin_only", "merge3 reads only safetensors"),
        absent="new-run",
    ),
    "search-endpoint-with-more-layers": Case(
        "model",
        _search_with(_endpoint("deeper")),
        _named("deeper", "num_hidden_layers is 3", "fine-tunes of the base"),
        absent="new-run",
    ),
    "search-endpoint-of-another-width": Case(
        "model",
        _search_with(_endpoint("wider")),
        _named("wider", "hidden_size is 128"),
        absent="new-run",
    ),
    "search-endpoint-tensor-of-another-shape": Case(
        "model",
        _search_with(_endpoint("bad_shape")),
        _static(f"tensor {UP!r}", "endpoint 'add'", "shape (256, 48)"),
        absent="new-run",
    ),
    "search-endpoint-with-nan": Case(
        "model",
        _search_with(_endpoint("nan")),
        _named("nan", f"tensor {UP!r}", "NaN or Inf"),
        absent="new-run",
    ),
    "search-endpoint-lacking-a-tensor": Case(
        "model",
        _search_with(_endpoint("missing_tensor")),
        _named("missing_tensor", "lacks tensor", UP),
        absent="new-run",
    ),
    "search-endpoint-with-garbage-weights": Case(
        "model",
        _search_with(_endpoint("garbage_weights")),
        _named("garbage_weights", "model.safetensors: unreadable safetensors file"),
        absent="new-run",
    ),
    "search-endpoint-with-malformed-config-json": Case(
        "model",
        _search_with(_endpoint("bad_json")),
        _named("bad_json", "config.json: malformed config.json"),
        absent="new-run",
    ),
    "search-endpoint-index-lists-a-missing-shard": Case(
        "model",
        _search_with(_endpoint("bad_index")),
        _named("bad_index", "model-00002-of-00002.safetensors", "is missing"),
        absent="new-run",
    ),
    # mergekit YAMLs (`merge3 merge`; the output folder must not appear) ------------------------
    "merge-yaml-missing": Case(
        "mergekit",
        lambda env, tmp: ["merge", str(tmp / "nope.yaml"), "--out", str(tmp / "merged")],
        _static("nope.yaml", "merge config not found"),
        absent="merged",
    ),
    "merge-yaml-is-a-list": Case(
        "mergekit",
        lambda env, tmp: [
            "merge",
            str(_file("m.yaml", "- ties\n- linear\n")(tmp)),
            "--out",
            str(tmp / "merged"),
        ],
        _static("m.yaml", "is a mapping with `merge_method`"),
        absent="merged",
    ),
    "merge-yaml-models-not-a-list": Case(
        "mergekit",
        _merge_yaml(_set("models", {"model": "x"})),
        _static("merge.yaml", "`models` must be a non-empty list"),
        absent="merged",
    ),
    "merge-yaml-entry-without-model": Case(
        "mergekit",
        _merge_yaml(lambda env, d: d["models"][1].pop("model")),
        _static("merge.yaml", "models[1] needs a `model` key"),
        absent="merged",
    ),
    "merge-yaml-lora-reference": Case(
        "mergekit",
        _merge_yaml(lambda env, d: d["models"][0].update(model="org/model+org/lora")),
        _static("merge.yaml", "models[0].model", "LoRA"),
        absent="merged",
    ),
    "merge-yaml-model-folder-missing": Case(
        "mergekit",
        _merge_yaml(lambda env, d: d["models"][1].update(model="/no/such/folder")),
        _static("merge.yaml", "models[1].model", "/no/such/folder"),
        absent="merged",
    ),
    "merge-yaml-per-model-global-parameter": Case(
        "mergekit",
        _merge_yaml(lambda env, d: d["models"][0]["parameters"].update({"lambda": 2.0})),
        _static("merge.yaml", "models[0].parameters.lambda", "not a per-model parameter"),
        absent="merged",
    ),
    "merge-yaml-unknown-dtype": Case(
        "mergekit",
        _merge_yaml(_set("dtype", "float8")),
        _static("merge.yaml", "dtype", "'float8'"),
        absent="merged",
    ),
    "merge-yaml-unknown-out-dtype": Case(
        "mergekit",
        _merge_yaml(_set("out_dtype", "int4")),
        _static("merge.yaml", "out_dtype", "'int4'"),
        absent="merged",
    ),
    "merge-yaml-endpoint-with-nan": Case(
        "mergekit",
        _merge_yaml(_merge_model(1, "nan")),
        _named("nan", f"tensor {UP!r}", "NaN or Inf"),
        absent="merged",
    ),
    "merge-yaml-endpoint-of-another-depth": Case(
        "mergekit",
        _merge_yaml(_merge_model(0, "deeper")),
        _named("deeper", "num_hidden_layers is 3"),
        absent="merged",
    ),
    "merge-yaml-endpoint-with-only-a-pickle": Case(
        "mergekit",
        _merge_yaml(_merge_model(0, "bin_only")),
        _named("bin_only", "merge3 reads only safetensors"),
        absent="merged",
    ),
    # response matrices (`merge3 irt fit`) -----------------------------------------------------
    "responses-missing": Case(
        "responses",
        _irt_fit(lambda tmp: tmp / "none.csv"),
        _static("none.csv", "not found"),
        absent="i.json",
    ),
    "responses-empty-file": Case(
        "responses",
        _irt_fit(_file("empty.csv", "")),
        _static("empty.csv"),
        absent="i.json",
    ),
    "responses-value-outside-0-1": Case(
        "responses",
        _irt_fit(_file("r.csv", RESPONSES_OK.replace("m2,0,1,1", "m2,0,2,1"))),
        _static("r.csv", "value 2.0", "'m2'", "'t/b'", "outside [0, 1]"),
        absent="i.json",
    ),
    "responses-non-numeric": Case(
        "responses",
        _irt_fit(_file("r.csv", RESPONSES_OK.replace("m3,1,1,0", "m3,1,yes,0"))),
        _static("r.csv", "non-numeric", "model 'm3', item 't/b'"),
        absent="i.json",
    ),
    "responses-duplicate-item": Case(
        "responses",
        _irt_fit(_file("r.csv", RESPONSES_OK.replace("t/c", "t/a"))),
        _static("r.csv", "duplicate", "t/a"),
        absent="i.json",
    ),
    "responses-duplicate-model": Case(
        "responses",
        _irt_fit(_file("r.csv", RESPONSES_OK.replace("m3,", "m1,"))),
        _static("r.csv", "duplicate model id 'm1'"),
        absent="i.json",
    ),
    "responses-corrupt-parquet": Case(
        "responses",
        _irt_fit(_file("r.parquet", b"PAR1 this is not really parquet")),
        _static("r.parquet"),
        absent="i.json",
    ),
    "responses-items-file-row-without-task": Case(
        "responses",
        _irt_fit(
            _file("r.csv", "model,a,b\nm1,1,0\nm2,0,1\n"), "--items", "ITEMS"
        ),  # ITEMS: patched in below
        _static("items.json", "row 2 needs 'item' and 'task'"),
        absent="i.json",
    ),
    # anchor and IRT item files (`merge3 estimate`, `merge3 extract`) --------------------------
    "anchors-missing": Case(
        "anchors",
        _estimate(anchors=lambda env, tmp: tmp / "none.json"),
        _static("none.json", "anchor file not found"),
    ),
    "anchors-not-json": Case(
        "anchors",
        _estimate(anchors=lambda env, tmp: _file("anchors.json", "{tasks: [")(tmp)),
        _static("anchors.json", "not valid JSON"),
    ),
    "anchors-without-tasks": Case(
        "anchors",
        _estimate(anchors=_anchors(lambda d: {"method": "random"})),
        _static("anchors.json", "not an anchor file"),
    ),
    "anchors-weights-do-not-match-items": Case(
        "anchors",
        _estimate(anchors=_anchors(lambda d: d["tasks"]["task0"]["weights"].append(0.5))),
        _static("anchors.json", "task0", "weights"),
    ),
    "anchors-item-not-in-the-irt-bank": Case(
        "anchors",
        _estimate(anchors=_anchors(lambda d: d["tasks"]["task0"]["items"].__setitem__(0, "zz"))),
        _static("'zz'"),
    ),
    "irt-items-missing": Case(
        "anchors",
        _estimate(irt=lambda env, tmp: tmp / "none.json"),
        _static("none.json", "IRT item file not found"),
    ),
    "irt-items-not-json": Case(
        "anchors",
        _estimate(irt=lambda env, tmp: _file("items.json", "[1, 2")(tmp)),
        _static("items.json"),
    ),
    "irt-items-garbage-safetensors": Case(
        "anchors",
        _estimate(irt=lambda env, tmp: _file("items.safetensors", b"\x07garbage" * 30)(tmp)),
        _static("items.safetensors"),
    ),
    "extract-from-missing-irt-items": Case(
        "anchors",
        lambda env, tmp: [
            "extract",
            "--irt",
            str(tmp / "none.json"),
            "--n",
            "2",
            "--out",
            str(tmp / "out.json"),
        ],
        _static("none.json", "IRT item file not found"),
        absent="out.json",
    ),
    # `merge3 evaluate` -------------------------------------------------------------------------
    "evaluate-model-folder-missing": Case(
        "evaluate",
        _evaluate(lambda env, tmp: str(tmp / "gone"), _add_items),
        _static("gone", "model folder not found"),
    ),
    "evaluate-model-with-only-a-pickle": Case(
        "evaluate",
        _evaluate(_models_dir("base_bin_only"), _add_items),
        _named("base_bin_only", "merge3 reads only safetensors"),
    ),
    "evaluate-items-not-json": Case(
        "evaluate",
        _evaluate(_base, _items('{"id": "q1", "question": "2+2", "choices": ["4"], "answer": 0\n')),
        _static("items.jsonl:1", "not valid JSON"),
    ),
    "evaluate-model-without-tokenizer": Case(
        "evaluate",
        _evaluate(_models_dir("no_tokenizer"), _add_items),
        _named("no_tokenizer", "tokenizer"),
    ),
    "evaluate-unknown-dtype": Case(
        "evaluate",
        _evaluate(_base, _add_items, "--dtype", "float8"),
        _static("--dtype must be one of float32", "not 'float8'"),
    ),
    # run directories (`merge3 resume`, `front`, `export`, `search`) -----------------------------
    "resume-missing-run-dir": Case(
        "run-dir",
        lambda env, tmp: ["resume", str(tmp / "nowhere")],
        _static("nowhere", "run directory not found"),
    ),
    "front-dir-without-config": Case(
        "run-dir",
        _in_run("front", lambda run: (run / "config.yaml").unlink()),
        _static("run", "no config.yaml"),
        run_dir=True,
    ),
    "resume-corrupt-sqlite": Case(
        "run-dir",
        _in_run("resume", _overwrite("run.sqlite", b"this is no database " * 300)),
        _static("run.sqlite", "not a merge3 run database"),
        run_dir=True,
    ),
    "front-corrupt-sqlite": Case(
        "run-dir",
        _in_run("front", _overwrite("run.sqlite", b"this is no database " * 300)),
        _static("run.sqlite", "not a merge3 run database"),
        run_dir=True,
    ),
    "resume-truncated-sqlite": Case(
        "run-dir",
        _in_run("resume", _truncate("run.sqlite")),
        _static("run.sqlite"),
        run_dir=True,
    ),
    "resume-config-edited-since-the-run": Case(
        "run-dir",
        _in_run("resume", _run_config(lambda d: d["search"].update(population=6))),
        _static("config.yaml", "search.population changed since the run started (4 → 6)"),
        run_dir=True,
    ),
    "resume-config-invalid-yaml": Case(
        "run-dir",
        _in_run("resume", _overwrite("config.yaml", b"search: [population\n")),
        _static("config.yaml", "invalid YAML"),
        run_dir=True,
    ),
    "resume-corrupt-anchors": Case(
        "run-dir",
        _in_run("resume", _overwrite("anchors.json", b'{"tasks": {')),
        _static("anchors.json", "not valid JSON"),
        run_dir=True,
    ),
    "export-rank-beyond-the-run": Case(
        "run-dir",
        lambda env, tmp: ["export", str(tmp / "run"), "--out", str(tmp / "exp"), "--rank", "99"],
        _static("--rank 99"),
        run_dir=True,
        absent="exp",
    ),
    "search-into-an-existing-run": Case(
        "run-dir",
        lambda env, tmp: [
            "search",
            str(tiny_config(tmp / "c.yaml")),
            "--run-dir",
            str(tmp / "run"),
        ],
        _static("run", "already holds a run", "merge3 resume"),
        run_dir=True,
    ),
}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: SHA-256 and mtime (ns), by relative path."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_table_is_wide():
    kinds = {c.kind for c in CASES.values()}
    assert len(CASES) >= 30
    assert kinds == {"config", "model", "mergekit", "responses", "anchors", "evaluate", "run-dir"}
    assert all(sum(c.kind == k for c in CASES.values()) >= 5 for k in kinds)


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_exits_2_with_one_line(env: Env, tmp_path: Path, name: str):
    case = CASES[name]
    if case.run_dir:
        shutil.copytree(env.run, tmp_path / "run", copy_function=shutil.copy2)
    args = case.build(env, tmp_path)
    if "ITEMS" in args:
        (tmp_path / "items.json").write_text(
            json.dumps([{"item": "a", "task": "t"}, {"item": "b"}])
        )
        args[args.index("ITEMS")] = str(tmp_path / "items.json")
    before = snapshot(tmp_path / "run") if case.run_dir else None

    result = runner.invoke(app, args)

    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("merge3: error: "), line
    assert "Traceback" not in result.output
    for needle in case.needles(env, tmp_path):
        assert needle in line, (needle, line)
    if case.run_dir:
        assert snapshot(tmp_path / "run") == before, "the run directory was modified"
    if case.absent:
        assert not (tmp_path / case.absent).exists(), f"{case.absent} was created"
    assert not env.marker.exists(), "a pickle from a model folder was unpickled"
