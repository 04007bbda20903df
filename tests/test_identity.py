"""A run's identity is fixed when it starts and only added to: its recipe, the commit that started it, and
each resume's commit and changes. --seeds, --reuse, the report and replay read it from there, never again
from a file that can change (nnhw.identity)."""

import json

import pytest

from nnhw import config, identity, inputs, replay, seeds, train

from conftest import REPO, TINY, killed_after_checkpoint


def tiny(tmp_path, extra=()):
    return config.load(REPO / "configs" / "relu.toml", [*TINY, f'run.log_dir="{tmp_path}"', *extra])


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def data(monkeypatch, mnist_root):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))


def test_a_seed_set_is_one_recipe_whatever_happens_to_its_file(tmp_path, data, monkeypatch):
    """The config file edited while seed 0 trains: seed 1 still trains the recipe the set started with,
    and the aggregate says which recipe that was."""
    path = tmp_path / "mine.toml"
    path.write_text(config.to_toml(tiny(tmp_path)))
    real_finish = train.finish

    def finish_then_edit(*args, **kwargs):
        real_finish(*args, **kwargs)
        path.write_text(config.to_toml(tiny(tmp_path, ["optim.lr=0.123"])))

    monkeypatch.setattr(train, "finish", finish_then_edit)
    assert train.main([str(path), "--seeds", "0,1"]) == 0
    (aggregate,) = (tmp_path / "relu").glob("seeds_*.json")  # run.name, which the file names, is relu
    agg = json.loads(aggregate.read_text())
    recipes = [summary_of(tmp_path / "relu" / r["run_dir"].split("/")[-1])["recipe"] for r in agg["runs"]]
    assert [r["optim.lr"] for r in recipes] == [1.0, 1.0] and [r["run.seed"] for r in recipes] == [0, 1]
    assert agg["recipe"] == {k: v for k, v in config.recipe(tiny(tmp_path)).items() if k != "run.seed"}
    assert agg["recipe_digest"] == config.digest(agg["recipe"])


def test_a_resumed_run_keeps_the_commit_that_started_it(tmp_path, data, monkeypatch):
    monkeypatch.setattr(train, "git_commit", lambda: "a" * 40)
    killed_after_checkpoint(monkeypatch, 2, lambda: train.run(tiny(tmp_path)))
    (run_dir,) = (tmp_path / "relu").iterdir()
    monkeypatch.setattr(train, "git_commit", lambda: "b" * 40)
    assert train.main(["--resume", str(run_dir)]) == 0
    s = summary_of(run_dir)
    assert s["git_commit"] == "a" * 40  # the code that computed its first steps
    assert s["changes"] == [dict(points=250, commit="b" * 40, keys=[], change="")]  # the resume: its commit, nothing changed
    assert s["recipe"] == config.recipe(tiny(tmp_path)) and s["recipe_digest"] == config.digest(s["recipe"])


def test_reuse_takes_no_run_a_resume_altered_nor_one_whose_config_toml_was_edited(tmp_path, data, monkeypatch):
    killed_after_checkpoint(monkeypatch, 2, lambda: train.run(tiny(tmp_path)))
    (altered,) = (tmp_path / "relu").iterdir()
    assert train.main(["--resume", str(altered), "train.epochs=2"]) == 0  # a longer schedule: another run from here on
    assert summary_of(altered)["changes"][0]["keys"] == ["train.epochs"]
    assert seeds.finished_run_of(tiny(tmp_path)) is None  # not what the first schedule gives
    assert seeds.finished_run_of(tiny(tmp_path, ["train.epochs=2"])) is None  # nor what the longer one gives from the start
    run_dir, status, _ = train.run(tiny(tmp_path))
    assert status == "finished" and seeds.finished_run_of(tiny(tmp_path)) == run_dir
    edited = config.to_toml(tiny(tmp_path, ["eval.max_points=100"]))  # its numbers would be of another evaluation
    (run_dir / "config.toml").write_text(edited)
    assert seeds.finished_run_of(tiny(tmp_path, ["eval.max_points=100"])) is None
    assert seeds.finished_run_of(tiny(tmp_path)) == run_dir  # what it started with, and replays as


def test_replay_of_a_run_resumed_with_a_longer_schedule_replays_the_steps_its_recipe_made(tmp_path, data, monkeypatch):
    killed_after_checkpoint(monkeypatch, 2, lambda: train.run(tiny(tmp_path)))  # 5 steps of 50 made
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert train.main(["--resume", str(run_dir), "train.epochs=2"]) == 0
    fingerprint = summary_of(run_dir)["fingerprint"]
    assert fingerprint["steps"] == 5  # the steps the first recipe made; the rest followed another schedule
    same, what = replay.replay(run_dir)
    assert same and what.startswith("same arithmetic: the parameters after its first 5 steps"), what


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def test_the_report_puts_no_seed_set_beside_a_run_of_another_recipe(tmp_path):
    recipe = config.recipe(tiny(tmp_path))
    older = dict(recipe, **{"optim.lr": 0.5})
    shared = lambda r: {k: v for k, v in r.items() if k != "run.seed"}  # noqa: E731
    run_dir = tmp_path / "relu" / "20260102-000000"
    command = "python -m nnhw.train configs/relu.toml --seeds 0,1,2"
    write_json(tmp_path / "relu" / "seeds_20260101-000000_0-1-2.json", dict(command=command, recipe=shared(older), runs=[]))
    assert inputs.latest_seeds([tmp_path], "relu", run_dir, recipe) is None  # the set of the config before its edit
    write_json(tmp_path / "relu" / "seeds_20260103-000000_0-1-2.json", dict(command=command, recipe=shared(recipe), runs=[]))
    assert inputs.latest_seeds([tmp_path], "relu", run_dir, recipe).name == "seeds_20260103-000000_0-1-2.json"
    # a set made before sets kept their recipe counts only when it holds the run itself
    write_json(tmp_path / "relu" / "seeds_20260104-000000_0-1-2.json", dict(command=command, runs=[dict(run_dir="/elsewhere/relu/20260101-000000")]))
    assert inputs.latest_seeds([tmp_path], "relu", run_dir, recipe).name == "seeds_20260103-000000_0-1-2.json"
    write_json(tmp_path / "relu" / "seeds_20260105-000000_0-1-2.json", dict(command=command, runs=[dict(run_dir=f"/x/relu/{run_dir.name}")]))
    assert inputs.latest_seeds([tmp_path], "relu", run_dir, recipe).name == "seeds_20260105-000000_0-1-2.json"


def test_the_report_takes_a_run_by_the_recipe_it_started_with(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report reads configs/<name>.toml where it is built
    committed = tiny(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "relu.toml").write_text(config.to_toml(committed))
    for name, recipe, changes in (("20260101-000000", config.recipe(committed), []),
                                  ("20260102-000000", dict(config.recipe(committed), **{"optim.lr": 0.5}), []),
                                  ("20260103-000000", config.recipe(committed), [dict(points=250, commit="c", keys=["optim.lr"], change="")])):
        write_json(tmp_path / "logs" / "relu" / name / "summary.json", dict(status="finished", recipe=recipe, changes=changes))
        (tmp_path / "logs" / "relu" / name / "config.toml").write_text(config.to_toml(committed))
    # the newest started with another recipe; the one before was altered on a resume: the first is the run
    assert inputs.latest_run([tmp_path / "logs"], "relu").name == "20260101-000000"
    assert identity.altering([dict(points=1, commit="c", keys=["run.device", "run.log_dir"], change="...")]) == []


def test_a_recipe_recorded_before_a_key_existed_held_its_default():
    """A key added to the config after a run started was at its default in that run: the run is still a
    run of the recipe that has the default, and of no recipe that sets the key otherwise."""
    cfg = config.load(REPO / "configs" / "fast.toml")
    now = config.recipe(cfg)
    then = {k: v for k, v in now.items() if k not in ("optim.ema", "train.augment_off_last")}
    assert identity.is_run_of({"recipe": then}, None, now)
    assert not identity.is_run_of({"recipe": then}, None, {**now, "optim.ema": 0.999})
    assert identity.recorded(then) == now
