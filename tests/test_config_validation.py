"""The config is validated as a whole before anything runs (reidbench/config.py ``validate``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from reidbench import cli, config
from reidbench import config_rules as rules
from reidbench.config import CONFIG_DIR, EvalConfig, RunConfig, from_dict, resolve_config, validate
from reidbench.config_rules import FIELD_RULES
from reidbench.errors import ConfigError
from reidbench.registry import DATASETS, MODELS, load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them


@pytest.mark.parametrize("sets,message", [
    (["train.epochs=0"], "train.epochs must be an integer >= 1, got 0"),
    (["train.epochs=-3"], "train.epochs must be an integer >= 1, got -3"),
    (["train.batch_size=0"], "train.batch_size must be an integer >= 1, got 0"),
    (["train.lr=0"], "train.lr must be a finite number > 0 (within float32), got 0.0"),
    (["train.lr=-1e-3"], "train.lr must be a finite number > 0 (within float32), got -0.001"),
    (["train.lr=nan"], "train.lr must be a finite number > 0 (within float32), got nan"),
    (["train.lr=.inf"], "train.lr must be a finite number > 0 (within float32), got inf"),
    (["train.lr=1e39"], "train.lr must be a finite number > 0 (within float32), got 1e+39"),
    (["train.weight_decay=-0.1"], "train.weight_decay must be a finite number >= 0, got -0.1"),
    (["train.warmup_epochs=-1"], "train.warmup_epochs must be an integer >= 0, got -1"),
    (["train.min_lr_ratio=1.5"], "train.min_lr_ratio must be a number in [0, 1], got 1.5"),
    (["train.grad_clip=0"], "train.grad_clip must be a finite number > 0 or null, got 0.0"),
    (["train.seed=-1"], "train.seed must be an integer in [0, 2^32), got -1"),
    (["train.device=tpu"], "unknown device 'tpu' (train.device); expected auto, cpu, mps, cuda or cuda:N"),
    (["train.threads=0"], "train.threads must be an integer >= 1 or null, got 0"),
    (["model.patch_size=0"], "model.patch_size must be an integer >= 1, got 0"),
    (["model.size=huge"], "model.size must be one of nano, tiny, small, base, got 'huge'"),
    (["model.num_heads=3"], "model.embed_dim=128 is not divisible by model.num_heads=3"),
    (["model.depth=0"], "model.depth must be an integer >= 1 or null, got 0"),
    (["model.mlp_ratio=0"], "model.mlp_ratio must be a finite number > 0, got 0.0"),
    (["model.drop_path=1"], "model.drop_path must be a number in [0, 1), got 1.0"),
    (["model.ape=rope"], "model.ape must be one of learned, sincos, none, got 'rope'"),
    (["model.ape=sincos", "model.embed_dim=18", "model.num_heads=2"],
     "model.ape=sincos needs model.embed_dim divisible by 4, got 18"),
    (["model.rel.method=foo"],
     "model.rel.method must be one of euclidean, quant, cross, product, got 'foo'"),
    (["model.rel.mapping=log"], "model.rel.mapping must be one of piecewise, clip, got 'log'"),
    (["model.rel.mode=both"], "model.rel.mode must be one of bias, contextual, got 'both'"),
    (["model.rel.on=x"], "model.rel.on must be a non-empty subset of q, k, v"),
    (["model.rel.on=kk"], "model.rel.on must be a non-empty subset of q, k, v"),
    (["model.rel.mode=bias", "model.rel.on=kv"], "model.rel.mode=bias applies to q and k only"),
    (["model.rel.ratio=0"], "model.rel.ratio must be a finite number > 0, got 0.0"),
    (["model.rel.max_distance=-1"], "model.rel.max_distance must be an integer >= 0, got -1"),
    (["data.height=100"], "data.height=100 is not a multiple of model.patch_size=8"),
    (["data.width=0"], "data.width must be an integer >= 1, got 0"),
    (["data.num_instances=3"], "train.batch_size=64 is not a multiple of data.num_instances=3"),
    (["data.num_instances=128"], "train.batch_size=64 is not a multiple of data.num_instances=128"),
    (["data.num_instances=0"], "data.num_instances must be an integer >= 1, got 0"),
    (["data.flip_prob=1.5"], "data.flip_prob must be a number in [0, 1], got 1.5"),
    (["data.flip_prob=-0.1"], "data.flip_prob must be a number in [0, 1], got -0.1"),
    (["data.erase_prob=nan"], "data.erase_prob must be a number in [0, 1], got nan"),
    (["data.pad=-1"], "data.pad must be an integer >= 0, got -1"),
    (["data.sampler=random"], "data.sampler must be one of pk, pk_camera, got 'random'"),
    (["data.aug_affine=9"], "data.aug_affine must be an integer in 0..5"),
    (["data.std=0,1,1"], "data.std must be 3 finite numbers > 0, got (0.0, 1.0, 1.0)"),
    (["data.mean=0.5,0.5"], "data.mean must be 3 finite numbers, got (0.5, 0.5)"),
    (["data.num_workers=-1"], "data.num_workers must be an integer >= 0, got -1"),
    (["data.synth_ids=1"], "data.synth_ids must be an integer >= 2 or null, got 1"),
    (["data.root="], "data.root must be a non-empty path or null, got ''"),
    (["data.name=nope"], "unknown dataset 'nope'; expected one of: dukemtmc, folder"),
    (["data.name='folder:'"], "data.name must be a registered dataset name or folder:PATH"),
    (["model.name=no-such-model"], "unknown model 'no-such-model'; expected one of: ape"),
    (["eval.metric=foo"], "eval.metric must be one of cosine, euclidean, got 'foo'"),
    (["eval.max_rank=0"], "eval.max_rank must be an integer >= 1, got 0"),
    (["eval.batch_size=0"], "eval.batch_size must be an integer >= 1, got 0"),
    (["eval.rerank_k1=0"], "eval.rerank_k1 must be an integer >= 1, got 0"),
    (["eval.rerank_lambda=2"], "eval.rerank_lambda must be a number in [0, 1], got 2.0"),
    (["loss.terms=ce,triplet", "loss.weights=1"],
     "loss.weights has 1 values for the 2 loss.terms (ce, triplet)"),
    (["loss.terms=ce,focal", "loss.weights=1,1"], "unknown loss 'focal' in loss.terms; expected one of:"),
    (["loss.terms=ce,ce", "loss.weights=1,1"], "loss.terms must be one or more loss names, none repeated"),
    (["loss.terms=[]", "loss.weights=[]"], "loss.terms must be one or more loss names, none repeated"),
    (["loss.weights=1,nan"], "loss.weights must be finite numbers >= 0, got (1.0, nan)"),
    (["loss.weights=0,0"], "loss.weights=(0.0, 0.0) are all 0: nothing would be trained"),
    (["loss.weights=1,-1"], "loss.weights must be finite numbers >= 0, got (1.0, -1.0)"),
    (["loss.label_smoothing=1"], "loss.label_smoothing must be a number in [0, 1), got 1.0"),
    (["loss.scale=0"], "loss.scale must be a finite number > 0, got 0.0"),
    (["loss.arc_margin=2"], "loss.arc_margin must be a number in [0, pi/2) radians, got 2.0"),
    (["loss.ada_momentum=0"], "loss.ada_momentum must be a number in (0, 1], got 0.0"),
    (["loss.supcon_temperature=0"], "loss.supcon_temperature must be a finite number > 0, got 0.0"),
    (["loss.rp_topn=1"], "loss.rp_topn must be an integer >= 2, got 1"),
    (["loss.terms=ce,jsd", "loss.weights=1,1", "loss.rp_topn=200"],
     "loss.rp_topn=200 exceeds the 128 patches of the 16x8 grid"),
    (["loss.terms=ce,rp_triplet", "loss.weights=1,1", "loss.rp_layers=4"],
     "loss.rp_layers=(4,) must lie in [-4, 4) for model.depth=4"),
    (["output="], "output must be a non-empty path, got ''"),
])
def test_bad_values_name_key_value_and_what_is_allowed(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_config(overrides=sets)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_every_problem_is_reported_at_once_on_one_line() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_config(overrides=["train.epochs=0", "eval.metric=foo", "train.lr=nan"])
    text = str(exc.value)
    assert text.startswith("3 config errors: ") and "\n" not in text
    for key in ("train.epochs", "eval.metric", "train.lr"):
        assert key in text


def test_cnn_models_ignore_the_vit_fields() -> None:
    # patch size, heads and sincos constrain ViTs only (reidbench/models/cnn.py ignores them)
    for name in sorted(rules.CNN_MODELS):
        cfg = resolve_config(model=name, overrides=["data.height=100", "model.num_heads=3"])
        assert cfg.data.height == 100
    with pytest.raises(ConfigError, match="not a multiple of model.patch_size"):
        resolve_config(model="poster", overrides=["data.height=100"])
    with pytest.raises(ConfigError, match="model.ape='none' is not supported by poster"):
        resolve_config(model="poster", overrides=["model.ape=none"])


def test_cnn_model_list_matches_the_zoo() -> None:
    """CNN_MODELS (exempt from the ViT rules) are exactly the registered models without patches."""
    from reidbench.models import build_model

    for name in MODELS.names():
        cfg = resolve_config(model=name, overrides=["model.depth=1", "model.embed_dim=32",
                                                    "model.num_heads=2", "model.size=nano"])
        model = build_model(cfg.model, (64, 32), 10)
        assert (not hasattr(model.backbone, "grid")) == (name in rules.CNN_MODELS), name


def test_choice_tables_match_the_code_that_consumes_them() -> None:
    from reidbench.data.perturb import MAX_SEVERITY
    from reidbench.data.sampler import SAMPLERS
    from reidbench.layers.irpe import IRPE_METHODS, IRPE_MODES
    from reidbench.layers.rel_index import MAPPINGS
    from reidbench.models.cnn import OSNET_WIDTHS
    from reidbench.models.vit import SIZES

    assert rules.SAMPLERS == SAMPLERS
    assert rules.IRPE_METHODS == IRPE_METHODS and rules.IRPE_MODES == IRPE_MODES
    assert rules.IRPE_MAPPINGS == MAPPINGS
    assert rules.SIZE_PRESETS == SIZES and tuple(OSNET_WIDTHS) == rules.SIZE_NAMES
    assert rules.MAX_SEVERITY == MAX_SEVERITY


def test_every_field_has_a_rule() -> None:
    """A new config field cannot be added without saying what values it accepts."""
    def leaves(cls: type, prefix: str = "") -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            tp = cls.__annotations__[f.name]
            sub = {"DataConfig": config.DataConfig, "ModelConfig": config.ModelConfig,
                   "LossConfig": config.LossConfig, "TrainConfig": config.TrainConfig,
                   "EvalConfig": config.EvalConfig, "RelPosConfig": config.RelPosConfig,
                   "RopeConfig": config.RopeConfig}.get(str(tp))
            out += leaves(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
        return out

    assert sorted(leaves(RunConfig)) == sorted(FIELD_RULES)


def test_validation_guards_every_way_of_making_a_config() -> None:
    with pytest.raises(ConfigError, match="eval.metric must be one of cosine, euclidean"):
        from_dict(RunConfig, {"eval": {"metric": "foo"}})
    with pytest.raises(ConfigError, match="eval.max_rank must be an integer >= 1"):
        RunConfig(eval=EvalConfig(max_rank=0))
    with pytest.raises(ConfigError, match="train.epochs"):
        dataclasses.replace(RunConfig(), train=dataclasses.replace(RunConfig().train, epochs=0))
    assert validate(RunConfig()) == RunConfig()


def _presets() -> list[Path | None]:
    return [None, *sorted((CONFIG_DIR / "experiments").glob("*.yaml"))]


@pytest.mark.parametrize("experiment", _presets(), ids=lambda p: p.stem if p else "presets")
def test_every_shipped_preset_validates_with_every_model_and_dataset(experiment: Path | None) -> None:
    for dataset in DATASETS.names():
        for model in MODELS.names():
            cfg = resolve_config(dataset, model, experiment)
            assert (cfg.data.name, cfg.model.name) == (dataset, model)


def test_committed_run_records_validate() -> None:
    records = sorted((REPO / "results").glob("**/runs/*/config.yaml"))
    assert records
    for path in records:
        from_dict(RunConfig, yaml.safe_load(path.read_text()))


def test_empty_section_in_a_config_file_keeps_the_presets(tmp_path: Path) -> None:
    """``train:`` with nothing under it (YAML null) changes nothing; it never drops the preset."""
    preset = resolve_config("synthetic-reid", "irpe")
    user = tmp_path / "exp.yaml"
    user.write_text("train:\n  # epochs: 3\nmodel:\n  rel:\neval:\n")
    cfg = resolve_config("synthetic-reid", "irpe", user)
    assert cfg == preset
    assert (cfg.train.epochs, cfg.train.lr) == (40, 1e-3)  # the synthetic-reid recipe
    assert resolve_config(overrides=["train=null"]) == resolve_config()  # --set alike
    # a null leaf still means null
    user.write_text("train:\n  grad_clip: null\n")
    assert resolve_config(config_file=user).train.grad_clip is None


def test_null_leaf_overrides_even_without_base_yaml(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("train:\n")
    user = tmp_path / "u.yaml"
    user.write_text("train:\n  grad_clip: null\n")
    cfg = resolve_config(config_file=user, config_dir=tmp_path)
    assert cfg.train.grad_clip is None and cfg.train.epochs == 12  # defaults below every layer


@pytest.mark.parametrize("content,match", [
    (b"train:\n  lr: 1.0e-3\n  # caf\xe9\n", "is not UTF-8 text"),
    (b"\xff\xfe\x00t", "is not UTF-8 text"),
])
def test_non_utf8_config_is_one_line(tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as exc:
        resolve_config(config_file=bad)
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value)


def test_directory_as_config_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; expected a YAML file"):
        resolve_config(config_file=tmp_path)


def test_unquoted_yaml_boolean_key_gets_a_hint(tmp_path: Path) -> None:
    user = tmp_path / "u.yaml"
    user.write_text("model:\n  rel:\n    on: q\n")
    with pytest.raises(ConfigError, match='quote it'):
        resolve_config(model="irpe", config_file=user)


@pytest.mark.parametrize("args,needle", [
    (["run", "--epochs", "0"], "train.epochs must be an integer >= 1, got 0"),
    (["run", "--batch-size", "0"], "train.batch_size must be an integer >= 1, got 0"),
    (["run", "--set", "eval.metric=foo"], "eval.metric must be one of cosine, euclidean"),
    (["run", "--set", "train.lr=nan"], "train.lr must be a finite number > 0 (within float32), got nan"),
    (["bench", "--epochs", "-1"], "train.epochs must be an integer >= 1, got -1"),
])
def test_cli_refuses_before_training(
    tmp_path: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str],
) -> None:
    out = ["--output", str(tmp_path / "out")]
    code = cli.main(["-q", *args, *out])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing was created, nothing trained


def test_cli_config_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"train:\n  epochs: 2 # \xe9\xe9\n")
    for path in (bad, tmp_path):
        code = cli.main(["-q", "run", "--config", str(path), "--output", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("reidbench: error: ") and err.count("\n") == 1, err


def test_rule_table_reads_as_documentation() -> None:
    rows = rules.rules_table()
    assert rows.splitlines()[0] == "| key | allowed |"
    assert "| `train.lr` | a finite number > 0 (within float32) |" in rows
    assert "| `train.batch_size`, `data.num_instances` |" in rows
    assert len(rows.splitlines()) == 2 + len(FIELD_RULES) + len(rules.WHOLE_RULES)


def test_readme_lists_the_rules_the_code_applies() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert rules.rules_table() in readme  # regenerate the README table after changing a rule
