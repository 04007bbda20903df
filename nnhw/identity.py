"""What a run is a run of: the recipe it started with, the code that started it, and what changed since.

A run's identity is written when it starts and only added to (checkpoint.TrainState): its recipe
(config.recipe, the config less the keys that only say where a run goes), that recipe's digest, the
commit that started it, and for each resume the commit and the keys it changed. A run is a run of a
recipe when it started with that recipe and no resume changed a key of it; `--reuse`, the report and
the replay check all decide so here, and none of them reads the identity again from an editable
config.toml.
"""

from . import config as config_mod
from .config import WHERE_KEYS

NOISE = "noise"  # a resume's key when it re-seeded the dropout/augmentation stream (another device's checkpoint)


def altering(changes):
    """The resumes among a run's `changes` that altered its arithmetic: those that changed a key of the
    recipe (not only where it went) or re-seeded its noise. A resume recorded before resumes kept their
    keys counts as altering when it changed anything."""
    return [c for c in changes if (any(k not in WHERE_KEYS for k in c["keys"]) if "keys" in c else bool(c.get("change")))]


def recorded(recipe):
    """A recipe as a summary or a seed set recorded it, with the default of each key added to the config
    since: the run held that default then."""
    return {**config_mod.recipe(config_mod.Config()), **recipe}


def start_recipe(summary, cfg):
    """The recipe a finished run started with: its summary's, with the default of each key added to the
    config since, or for a run made before summaries kept it, that of its config.toml (`cfg`), which is
    its start's when no resume changed it."""
    recipe = summary.get("recipe")
    if not isinstance(recipe, dict):
        return config_mod.recipe(cfg)
    return recorded(recipe)


def is_run_of(summary, cfg, recipe, but=()):
    """True when the run (its summary and its config.toml's Config) started with `recipe`, keys `but`
    aside (run.seed for the runs of a seed set), and no resume altered it."""
    mine = start_recipe(summary, cfg)
    return (not altering(summary.get("changes") or []) and
            {k: v for k, v in mine.items() if k not in but} == {k: v for k, v in recipe.items() if k not in but})


def of(cfg, commit):
    """What a new run's summary says of its identity: its recipe, that recipe's digest and its commit."""
    recipe = config_mod.recipe(cfg)
    return dict(recipe=recipe, recipe_digest=config_mod.digest(recipe), git_commit=commit)
