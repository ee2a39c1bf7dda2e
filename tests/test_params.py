"""Bad profiles fail before any work, with one message naming the file, the key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from robnb.params import ParamsError, load_params

GOOD = {"name": "t", "family": "local-neox", "sizes": ["neox-xs"], "tasks": ["spam"]}


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "profile.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_shipped_profiles_validate():
    for name in ("quick", "ci", "paper-pythia"):
        params = load_params(name)
        assert params.name == name


def test_paper_profile_holds_paper_settings():
    p = load_params("paper-pythia")
    assert p.sizes[0] == "14m" and p.sizes[-1] == "12b" and len(p.sizes) == 10
    assert p.finetune.lr == 1e-5 and p.finetune.epochs == 3 and p.finetune.optimizer == "adafactor"
    assert p.seeds == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("data, key, allowed", [
    ({**GOOD, "colour": "red"}, "colour", "allowed keys here"),                      # unknown key
    ({**GOOD, "finetune": {"learning_rate": 1}}, "finetune.learning_rate", "lr"),    # unknown nested key
    ({**GOOD, "tasks": ["pm"]}, "tasks", "password_match"),                         # unknown task
    ({**GOOD, "sizes": ["neox-huge"]}, "sizes", "neox-xs"),                          # unknown size
    ({**GOOD, "family": "gpt5"}, "family", "pythia"),                               # unknown family
    ({**GOOD, "family": "pythia", "sizes": ["neox-xs"]}, "sizes", "14m"),            # size of another family
    ({**GOOD, "seeds": [-1]}, "seeds.0", "greater than or equal to 0"),              # negative seed
    ({**GOOD, "finetune": {"n_train": -5}}, "finetune.n_train", "greater than 0"),   # negative count
    ({**GOOD, "finetune": {"batch_size": "eight"}}, "finetune.batch_size", "integer"),  # wrong type
    ({**GOOD, "pretrain": {"steps": 0}}, "pretrain.steps", "greater than 0"),        # zero count
    ({**GOOD, "attack": {"attacks": [{"name": "gcg", "placement": "middle"}]}},
     "attack.attacks.0.placement", "infix90"),                                       # bad placement
    ({**GOOD, "device": "tpu"}, "device", "cuda"),                                   # bad device
    ({**GOOD, "seeds": [1, 1]}, "seeds", "repeat"),                                  # duplicate seeds
    ({**GOOD, "task_sources": {"imdb": "/nonexistent/imdb"}}, "task_sources.imdb", "missing"),  # missing file
    ({"family": "local-neox", "sizes": ["neox-xs"], "tasks": ["spam"]}, "name", "Field required"),
])
def test_bad_profiles_name_file_key_and_allowed(tmp_path, data, key, allowed):
    path = write(tmp_path, data)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"- {key}:" in msg
    assert allowed in msg


def test_missing_profile_lists_known_ones():
    with pytest.raises(ParamsError, match="known profiles: .*quick"):
        load_params("no-such-profile")


def test_not_yaml_and_not_mapping(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ParamsError, match="must be a mapping"):
        load_params(write(tmp_path, "- a\n- b\n"))


def test_overrides_are_validated_too():
    assert load_params("ci", {"finetune.n_train": 7}).finetune.n_train == 7
    with pytest.raises(ParamsError, match="finetune.n_train"):
        load_params("ci", {"finetune.n_train": -7})


def test_prefix_or_infix_on_a_task_without_modifiable_text_is_refused_or_left_out():
    from robnb.params import AttackSpec

    with pytest.raises(Exception, match="placement prefix on \\['password_match'\\].*empty"):
        AttackSpec(name="gcg", placement="prefix", tasks=["password_match", "spam"])
    infix = AttackSpec(name="gcg", placement="infix90")
    assert infix.applies_to("spam") and not infix.applies_to("word_length")
    assert AttackSpec(name="gcg").applies_to("password_match")
    only_spam = AttackSpec(name="random_token", tasks=["spam"])
    assert only_spam.applies_to("spam") and not only_spam.applies_to("sentiment")
