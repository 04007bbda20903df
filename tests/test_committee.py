"""The seeds' committee: several runs' mean softmax output, on hand-built outputs and on tiny real runs."""

import json
import shutil

import pytest
import torch

from nnhw import committee, config

from conftest import SHORT, finished_run


def test_a_committee_of_models_that_err_on_different_images_is_right_where_the_more_confident_is():
    labels = torch.tensor([0, 1, 2, 0])
    a = torch.tensor([[0.4, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.8, 0.0]])  # wrong on images 0 and 3
    b = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [0.1, 0.0, 0.9]])  # wrong on images 1 and 3
    assert committee.committee_error([a], labels) == 50.0 and committee.committee_error([b], labels) == 50.0
    # mean: image 0 [0.65, 0.35, 0] right, image 1 [0.1, 0.65, 0.25] right, image 2 right, image 3 [0.15, 0.4, 0.45] wrong
    assert committee.committee_error([a, b], labels) == 25.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mnist_root, module_env):
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    return finished_run(tmp_path_factory.mktemp("logs"), SHORT)


def test_a_committee_of_one_run_or_of_a_run_and_its_copy_is_that_run(tiny, tmp_path):
    final = json.loads((tiny / "summary.json").read_text())["final"]["test_error"]
    one = committee.committee([tiny], torch.device("cpu"))
    assert one["test_error"] == pytest.approx(final, abs=1e-9) and one["n_images"] == 1000
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    two = committee.committee([tiny, copy], torch.device("cpu"))
    assert two["test_error"] == pytest.approx(final, abs=1e-9) and [m["test_error"] for m in two["members"]] == [one["test_error"]] * 2


def test_members_with_other_evaluation_settings_vote_on_the_images_they_share(tiny, tmp_path):
    """One member evaluated the first 900 test images in batches of 400 (900 is no multiple of 400), the
    other the first 1,000 in batches of 1,000: the committee takes the first 900 for both."""
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    text = (other / "config.toml").read_text().replace("max_points = 1000", "max_points = 900").replace("batch_size = 1000", "batch_size = 400")
    (other / "config.toml").write_text(text)
    both = committee.committee([tiny, other], torch.device("cpu"))
    assert both["n_images"] == 900 and both["members"][0]["test_error"] == both["members"][1]["test_error"] == both["test_error"]


def test_runs_that_cannot_vote_are_one_line(tiny, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    (other / "config.toml").write_text(config.to_toml(config.load(other / "config.toml", ['model.arch="cnn"'])))  # not its checkpoint's model
    assert committee.main([str(tiny), str(other)]) == 2
    err = capsys.readouterr().err
    assert "its checkpoint's parameters do not fit the model its config.toml describes" in err and err.count("\n") == 1 and "Traceback" not in err
    (other / "summary.json").unlink()
    assert committee.main([str(tiny), str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not a finished run" in err and err.count("\n") == 1
    assert committee.main([str(tiny)]) == 0
    assert "committee of 1: test error" in capsys.readouterr().out


def test_a_committee_of_two_different_runs_is_the_mean_of_their_softmax_outputs(tiny, tmp_path_factory):
    """Two runs that differ (seeds 0 and 1): each member's probabilities are its model's softmax on the
    test images (rows that sum to 1), and the committee's guess is the argmax of their mean."""
    from nnhw import data, layers, models

    second = finished_run(tmp_path_factory.mktemp("other"), [*SHORT, "run.seed=1"])
    device = torch.device("cpu")
    members = [committee.member(d) for d in (tiny, second)]
    probabilities = [committee.test_probabilities(*m, device, 1000)[0] for m in members]  # the images both evaluated
    test = data.splits_on_disk(members[0][0].data, device)["test"]
    for (cfg, ckpt, model), p in zip(members, probabilities):
        forward = models.make_forward(layers.describe(cfg.model), ckpt["running"])
        with torch.no_grad():
            want = torch.softmax(forward(ckpt["params"], test.x[:1000]).double(), 1)
        torch.testing.assert_close(p, want)
        torch.testing.assert_close(p.sum(1), torch.ones(1000, dtype=torch.float64))
    mean = (probabilities[0] + probabilities[1]) / 2
    want_error = 100.0 * (mean.argmax(1) != test.y[:1000]).double().mean().item()
    assert committee.committee([tiny, second], device)["test_error"] == pytest.approx(want_error, abs=1e-12)
    assert not torch.equal(probabilities[0].argmax(1), probabilities[1].argmax(1))  # two different models
