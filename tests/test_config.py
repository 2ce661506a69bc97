from pathlib import Path

import pytest
import yaml

from flexrl.config import TrainRecipe, apply_override, load_recipe, recipe_to_yaml
from flexrl.errors import FlexrlError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_load():
    recipes = sorted((REPO / "recipes").glob("humanoid_*.yaml"))
    assert recipes, "recipes/ must ship the Humanoid recipes"
    for path in recipes:
        recipe = load_recipe(path, TrainRecipe)
        assert recipe.ppo.total_steps > 0


def test_defaults_fill_in_and_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(
        write(tmp_path, "name: walk\nppo:\n  learning_rate: 1.0e-4\n"), TrainRecipe
    )
    assert recipe.ppo.learning_rate == 1e-4
    assert recipe.ppo.gamma == 0.99  # a default, recorded in the resolved recipe
    resolved = yaml.safe_load(recipe_to_yaml(recipe))
    assert resolved["ppo"]["gamma"] == 0.99
    assert TrainRecipe.model_validate(resolved) == recipe


def test_unknown_key_names_its_path_and_suggests(tmp_path):
    with pytest.raises(FlexrlError) as e:
        load_recipe(write(tmp_path, "ppo:\n  learnig_rate: 0.1\n"), TrainRecipe)
    message = str(e.value)
    assert "ppo.learnig_rate: unknown key" in message
    assert "learning_rate" in message
    assert "\n" not in message


def test_wrong_type_names_its_path(tmp_path):
    with pytest.raises(FlexrlError, match=r"ppo\.learning_rate: input should be a valid number"):
        load_recipe(write(tmp_path, "ppo:\n  learning_rate: fast\n"), TrainRecipe)


def test_constraint_violations_are_reported(tmp_path):
    with pytest.raises(
        FlexrlError, match=r"env\.num_envs: input should be greater than or equal to 1"
    ):
        load_recipe(write(tmp_path, "env:\n  num_envs: 0\n"), TrainRecipe)


@pytest.mark.parametrize(
    "term", ["yaw_rate_wobble", "tracking_yaw_rate_mean", "tracking_lin_vel_mean"]
)
def test_running_mean_terms_without_the_running_mean_are_refused(tmp_path, term):
    path = write(tmp_path, f"env:\n  reward:\n    {term}: 1.0\n")
    with pytest.raises(FlexrlError, match=r"env\.observe_tracking: true") as refused:
        load_recipe(path, TrainRecipe)
    assert "(got" not in str(refused.value)  # not the whole env mapping again
    assert load_recipe(path, TrainRecipe, ["env.observe_tracking=true"]).env.observe_tracking


def test_the_mirror_loss_is_refused_for_a_gymnasium_env(tmp_path):
    path = write(tmp_path, "env:\n  id: Hopper-v5\nppo:\n  mirror_coef: 0.1\n")
    with pytest.raises(FlexrlError, match=r"ppo\.mirror_coef .* Hopper-v5 has no mirror") as e:
        load_recipe(path, TrainRecipe)
    assert "\n" not in str(e.value) and "(got" not in str(e.value)
    assert load_recipe(path, TrainRecipe, ["env.id=null"]).ppo.mirror_coef == 0.1


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FlexrlError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml", TrainRecipe)
    with pytest.raises(FlexrlError, match=r"invalid YAML at line [23]"):
        load_recipe(write(tmp_path, "ppo:\n  a: [1, 2\n"), TrainRecipe)
    with pytest.raises(FlexrlError, match="must be a mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"), TrainRecipe)


def test_overrides_are_typed_and_checked(tmp_path):
    path = write(tmp_path, "ppo:\n  learning_rate: 1.0e-4\n")
    recipe = load_recipe(
        path, TrainRecipe, ["ppo.learning_rate=3e-4", "env.num_envs=4", "ppo.hidden_sizes=[64, 64]"]
    )
    assert recipe.ppo.learning_rate == 3e-4
    assert recipe.env.num_envs == 4
    assert recipe.ppo.hidden_sizes == [64, 64]
    with pytest.raises(FlexrlError, match=r"env\.num_envs: input should be a valid integer"):
        load_recipe(path, TrainRecipe, ["env.num_envs=many"])
    with pytest.raises(FlexrlError, match=r"ppo\.nope: unknown key"):
        load_recipe(path, TrainRecipe, ["ppo.nope=1"])
    with pytest.raises(FlexrlError, match=r"expected key\.path=value"):
        load_recipe(path, TrainRecipe, ["ppo.learning_rate"])


def test_override_into_a_value_is_refused():
    raw = {"seed": 1}
    with pytest.raises(FlexrlError, match="seed is a value, not a section"):
        apply_override(raw, "seed.x=2")
    assert raw == {"seed": 1}


def test_a_gymnasium_env_saves_only_the_fields_that_apply():
    """InvertedPendulum has no Humanoid task, command or reward: its saved recipe omits them
    (they were listed with Humanoid defaults), and it still loads back the same."""
    pendulum = load_recipe(REPO / "recipes" / "quickstart.yaml", TrainRecipe)
    saved = yaml.safe_load(recipe_to_yaml(pendulum))
    assert set(saved["env"]) == {"id", "num_envs", "vectorization", "max_episode_steps"}
    assert TrainRecipe.model_validate(saved) == pendulum
    humanoid = load_recipe(REPO / "recipes" / "humanoid_walk_forward.yaml", TrainRecipe)
    assert {"task", "command", "reward"} <= set(yaml.safe_load(recipe_to_yaml(humanoid))["env"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "greater than or equal to 0"),
        (f"seed={2**31}", "less than or equal to 2147483647"),
        ("torch_threads=1025", "less than or equal to 1024"),
        ("ppo.hidden_sizes=[]", "at least 1 item"),
        ("ppo.hidden_sizes=[64, 0]", "ppo.hidden_sizes.1"),
        ("ppo.gamma=.nan", "finite number"),
        ("env.healthy_z_range=[1.0, .inf]", "finite number"),
    ],
)
def test_values_no_run_can_use_are_refused(override, message):
    with pytest.raises(FlexrlError, match=message.replace(".", r"\.")):
        load_recipe(REPO / "recipes" / "quickstart.yaml", TrainRecipe, [override])
    assert load_recipe(REPO / "recipes" / "quickstart.yaml", TrainRecipe, [f"seed={2**31 - 1}"])
