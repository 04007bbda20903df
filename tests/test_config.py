import pytest

from nnhw import config, layers, train
from nnhw.config import ConfigError

from conftest import REPO


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_name_from_file(tmp_path):
    cfg = config.load(write(tmp_path, "[optim]\nlr = 0.05\n", "mine.toml"))
    assert cfg.optim.lr == 0.05 and cfg.optim.momentum == 0.9 and cfg.run.name == "mine"


def test_overrides_in_toml_syntax(tmp_path):
    cfg = config.load(
        write(tmp_path, ""),
        ["optim.lr=0.5", "model.hidden=[300, 100]", "model.transfer=tanh", 'run.name="x1"', "data.download=true", "train.epochs=2"],
    )
    assert cfg.optim.lr == 0.5 and cfg.model.hidden == [300, 100] and cfg.model.transfer == "tanh"
    assert cfg.run.name == "x1" and cfg.data.download is True and cfg.train.epochs == 2.0


def test_committed_configs_load():
    for name in ["softmax", "sigmoid", "relu"]:
        cfg = config.load(REPO / "configs" / f"{name}.toml")
        assert cfg.run.name == name


def test_saved_toml_round_trips(tmp_path):
    cfg = config.load(REPO / "configs" / "relu.toml", ["optim.milestones=[1.5]"])
    again = config.load(write(tmp_path, config.to_toml(cfg)))
    assert config.to_dict(again) == config.to_dict(cfg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[optim]\nlrr = 0.1\n", r"unknown key optim.lrr; did you mean 'optim.lr'\?"),
        ("[optimm]\nlr = 0.1\n", r"unknown section \[optimm\]; did you mean 'optim'\?"),
        ('[optim]\nlr = "fast"\n', r"optim.lr: expected float, got str 'fast'"),
        ("[train]\nbatch_size = 1.5\n", r"train.batch_size: expected int, got float 1.5"),
        ("[train]\nbatch_size = true\n", r"train.batch_size: expected int, got bool True"),
        ("[optim]\nlr = 0\n", r"optim.lr: must be > 0.0, got 0.0"),
        ("[optim]\nlr = -1\n", r"optim.lr: must be > 0.0"),
        ("[train]\nbatch_size = 0\n", r"train.batch_size: must be >= 1"),
        ("[optim]\nmomentum = 1.0\n", r"optim.momentum: must be < 1.0"),
        ("[optim]\nl2 = -0.1\n", r"optim.l2: must be >= 0.0"),
        ("[eval]\nevery = 0\n", r"eval.every: must be >= 1"),
        ('[model]\ntransfer = "relux"\n', r"model.transfer: unknown value 'relux'; did you mean 'relu'\?"),
        ('[model]\nloss = "hinge"\n', r"model.loss: unknown value 'hinge'"),
        ("[model]\nhidden = [200, 0]\n", r"model.hidden: every width must be >= 1"),
        ("[model]\nhidden = 200\n", r"model.hidden: expected a list of int"),
        ('[optim]\nschedule = "step"\n', r"optim.milestones: the 'step' schedule needs"),
        ('[run]\nname = "../../etc"\n', r"run.name: '../../etc' cannot name a folder inside run.log_dir"),
        ('[run]\nname = ".."\n', r"run.name"),
        ('[run]\ndevice = "gpu"\n', r"run.device"),
        ("[optim]\nlr = nan\n", r"optim.lr: expected a finite number"),
        ("lr = 0.1\n", r"unknown top-level key 'lr'"),
        ('[train]\ncompile = true\nengine = "tape"\n', r"train.compile: torch.compile needs train.engine = 'autograd'"),
        ('[model]\narch = "cnn"\nconv_channels = [4]\n', r"model.conv_kernel: needs one size per entry"),
        ('[model]\narch = "cnn"\nconv_kernel = [13, 13]\n', r"model.conv_kernel: the feature maps shrink to nothing"),
        ('[model]\narch = "cnn"\npool_type = "max"\ntransfer = "square"\n', r"model.pool_type: 'max' pools before the transfer function"),
        ('[model]\npool_type = "min"\n', r"model.pool_type: unknown value 'min'"),
        ('[model]\narch = "cnn"\npool_type = "max"\nbatch_norm_after_pool = true\n', r"model.batch_norm_after_pool: needs model.batch_norm = true"),
        ('[model]\narch = "cnn"\nbatch_norm = true\nbatch_norm_after_pool = true\n', r"model.batch_norm_after_pool: .*pool_type 'avg'"),
        ('[optim]\noptimizer = "adamw"\n', r"optim.optimizer: unknown value 'adamw'; did you mean 'adam'\?"),
        ("[optim]\nwarmup = 1.0\n", r"optim.warmup: must be < 1.0"),
        ("[model]\nlabel_smoothing = 1.0\n", r"model.label_smoothing: must be < 1.0"),
        ('[model]\nloss = "squared_error"\nlabel_smoothing = 0.1\n', r"model.label_smoothing: smooths the cross-entropy's target"),
        ("[optim]\neps = 0\n", r"optim.eps: must be >= 1e-30"),
        ("[optim\nlr = 0.1\n", r"malformed TOML: .*line 1"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        config.load(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr", r"expected section.key=value"),
        ("lr=0.1", r"expected section.key=value"),
        ("optim.lr=", r"no value after '='"),
        ("optim.lr=[1,", r"is not a TOML value"),
        ("optim.lr=abc", r"optim.lr: expected float, got str 'abc'"),
        ("optim.lrate=0.1", r"did you mean 'optim.lr'"),
    ],
)
def test_bad_override(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, ""), [override])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.toml"], "config file not found: missing.toml"),
        (["bad.toml"], "unknown key optim.lrr; did you mean 'optim.lr'?"),
        (["good.toml", "optim.lr=0"], "optim.lr: must be > 0.0"),
        (["good.toml", "optim.lr=fast"], "optim.lr: expected float"),
        ([], "no config given"),
        (["--resume", "nowhere"], "no checkpoint at nowhere"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path, args, message, monkeypatch, capsys):
    """In this process, as nnhw.train's main; test_train runs the command itself in a fresh one."""
    write(tmp_path, "[optim]\nlrr = 0.1\n", "bad.toml")
    write(tmp_path, "[optim]\nlr = 0.1\n", "good.toml")
    monkeypatch.chdir(tmp_path)
    try:
        code = train.main(args)
    except SystemExit as e:  # argparse's usage errors leave through SystemExit, as they do in the command
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_reference_lists_every_key_with_its_bounds():
    text = config.markdown()
    for section, factory in config.SECTIONS.items():
        for f in config.dataclasses.fields(factory()):
            assert f"| `{section}.{f.name}` |" in text
    assert "| `optim.momentum` | `0.9` | >= 0, < 1 |" in text
    assert "| `data.train_split` | `\"train\"` | `\"train\"`, `\"train+dev\"` |" in text


def test_docs_config_md_is_the_generated_reference():
    """docs/config.md is `python -m nnhw.config`'s output: regenerate it when a key changes."""
    assert (REPO / "docs" / "config.md").read_text() == config.markdown()


def test_conv_strides_shape_the_feature_maps_and_are_checked():
    cfg = config.load(None, ['model.arch="cnn"', "model.conv_channels=[32, 32, 64]", "model.conv_kernel=[3, 5, 3]",
                             "model.conv_stride=[1, 2, 1]", "model.pool=1"])
    sides = lambda cfg: [(ly.conv_shape[1], ly.out_shape[1]) for ly in layers.describe(cfg.model).layers if ly.kind == "conv"]  # noqa: E731
    assert sides(cfg) == [(26, 26), (11, 11), (9, 9)]  # 28-3+1; (26-5)//2+1; 11-3+1
    assert sides(config.load(None, ['model.arch="cnn"'])) == [(24, 12), (8, 4)]  # [] is stride 1
    for bad in ("model.conv_stride=[2]", "model.conv_stride=[1, 0]", "model.conv_stride=[1, 29]"):
        with pytest.raises(config.ConfigError, match="model.conv_stride"):
            config.load(None, ['model.arch="cnn"', bad])


def test_conv_dropout_takes_one_probability_per_layer():
    cfg = config.load(None, ['model.arch="cnn"', "model.dropout_conv=[0, 0.4]"])
    assert cfg.model.dropout_conv == [0.0, 0.4]
    for bad, message in (("[0.4]", "one probability per convolution layer"), ("[0, 1]", "must be < 1"), ("[-0.1, 0]", "must be >= 0")):
        with pytest.raises(config.ConfigError, match=message):
            config.load(None, ['model.arch="cnn"', f"model.dropout_conv={bad}"])


def test_the_report_says_what_each_cnn_config_pools_and_schedules():
    from nnhw import describe

    rows = {name: dict(describe.parameter_rows(config.load(REPO / "configs" / f"{name}.toml"))) for name in ("cnn", "cnn_bn", "fast")}
    assert "average pooling 2x2 stride 2 after each" in rows["cnn"]["model"]
    assert "no pooling" in rows["cnn_bn"]["model"] and "conv 32 3x3, conv 32 4x4 stride 2, conv 64 3x3, conv 64 4x4 stride 2" in rows["cnn_bn"]["model"]
    assert rows["cnn_bn"]["schedule"] == "cosine to 0 x lr" and "batch normalisation" in rows["cnn_bn"]
    assert rows["cnn_bn"]["dropout"] == "input 0, hidden 0.4, feature maps 0 0.4 0 0.4"
    exponential = config.load(REPO / "configs" / "cnn_bn.toml", ['optim.schedule="exponential"', "optim.gamma=0.95"])
    assert dict(describe.parameter_rows(exponential))["schedule"] == "x0.95 after each pass"


def test_a_seed_set_of_a_committed_config_may_say_where_it_went_and_reuse_runs():
    from nnhw.inputs import is_seed_set_of

    assert is_seed_set_of("python -m nnhw.train configs/cnn.toml --seeds 0,1,2", "cnn")
    assert is_seed_set_of("python -m nnhw.train configs/cnn.toml --seeds=0,1,2 --reuse run.log_dir=/x/tb_logs", "cnn")
    assert not is_seed_set_of("python -m nnhw.train configs/cnn.toml --seeds 0,1,2 optim.lr=0.1", "cnn")  # another config
    assert not is_seed_set_of("python -m nnhw.train configs/cnn_aug.toml --seeds 0,1,2", "cnn")
    assert not is_seed_set_of("python -m nnhw.train configs/cnn.toml", "cnn")  # no seed set
    assert not is_seed_set_of("python -m nnhw.train configs/cnn.toml --seeds 0,1 --seeds 2", "cnn")
    from nnhw.inputs import without_where

    assert without_where("python -m nnhw.train configs/cnn.toml --seeds 0,1,2 --reuse run.log_dir=/x/tb_logs") == \
        "python -m nnhw.train configs/cnn.toml --seeds 0,1,2 --reuse"
