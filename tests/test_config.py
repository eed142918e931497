"""params.yaml validation: every mistake names the key and what would be accepted."""
import shutil

import pytest
import yaml

from cifarbudget.config import OFFICIAL_ARCHIVES, DataParams, Params, load_params
from cifarbudget.errors import UserError
from tests.conftest import REPO, set_params


@pytest.fixture
def params_dir(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def load_with(folder, overrides):
    set_params(folder, overrides)
    return load_params(folder / "params.yaml")


def test_the_repository_params_are_valid_and_match_the_schema_defaults():
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize("overrides, message", [
    ({"classifier.learning_rate": 0.1},
     r"^classifier\.learning_rate: unknown key; allowed keys in classifier: seeds, widths, .*\blr\b"),
    ({"data.url": "x"},
     r"^data\.url: unknown key; allowed keys in data: name, source, md5, download_timeout, "
     r"download_deadline$"),
])
def test_unknown_keys_are_named_with_the_allowed_ones(params_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        load_with(params_dir, overrides)


def test_unknown_top_level_section(params_dir):
    path = params_dir / "params.yaml"
    path.write_text(path.read_text() + "\ntrainer:\n  lr: 0.1\n")
    with pytest.raises(UserError, match=r"^trainer: unknown key; allowed keys at the top level: data, "):
        load_params(path)


@pytest.mark.parametrize("overrides, message", [
    ({"classifier.lr": "fast"}, r"^classifier\.lr: expected float, got 'fast'$"),
    ({"budget.classifier_steps": True}, r"^budget\.classifier_steps: expected int, got True$"),
    ({"budget.generative_steps": 10.5}, r"^budget\.generative_steps: expected int, got 10\.5$"),
    ({"augment.flip": "yes"}, r"^augment\.flip: expected bool, got 'yes'$"),
    ({"classifier.widths": [32, "wide"]}, r"^classifier\.widths\[1\]: expected int, got 'wide'$"),
    ({"classifier.seeds": 0}, r"^classifier\.seeds: expected a list of int, got 0$"),
])
def test_wrong_types_are_rejected(params_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        load_with(params_dir, overrides)


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", ".NaN", "1e400"])
def test_nan_and_infinities_are_rejected(params_dir, text):
    path = params_dir / "params.yaml"
    path.write_text(path.read_text().replace("  lr: 0.2 ", f"  lr: {text} "))
    with pytest.raises(UserError, match=r"^classifier\.lr: .* is not a finite number; give one"):
        load_params(path)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("2E+1", 20.0), ("-1.5e2", -150.0)])
def test_scientific_notation_is_a_float(params_dir, text, value):
    # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as a string.
    path = params_dir / "params.yaml"
    path.write_text(path.read_text().replace("  lr: 0.2 ", f"  lr: {text} "))
    assert yaml.safe_load(path.read_text())["classifier"]["lr"] == text
    if value < 0:
        with pytest.raises(UserError, match=r"^classifier\.lr: -150\.0 is too small"):
            load_params(path)
    else:
        assert load_params(path).classifier.lr == value


def test_a_section_that_is_not_a_mapping_is_rejected(params_dir):
    path = params_dir / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["augment"] = 4
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"^augment: expected a mapping of keys, got 4$"):
        load_params(path)


def test_ints_are_accepted_where_floats_are_expected(params_dir):
    params = load_with(params_dir, {"classifier.lr": 1})
    assert params.classifier.lr == 1.0 and isinstance(params.classifier.lr, float)


@pytest.mark.parametrize("overrides, message", [
    ({"augment.crop_padding": 17}, r"^augment\.crop_padding: 17 is too large; it must be <= 16$"),
    ({"classifier.momentum": -0.1}, r"^classifier\.momentum: -0\.1 is too small; it must be >= 0\.0$"),
    ({"gan.loss": "wgan"}, r"^gan\.loss: 'wgan' is not allowed; choose one of hinge, aw_hinge$"),
    ({"data.name": "mnist"}, r"^data\.name: 'mnist' is not allowed; choose one of cifar10, cifar100$"),
    ({"budget.generative_params": 0}, r"^budget\.generative_params: 0 is too small; it must be >= 1$"),
    # Keys renamed since users wrote them: the error names the new key.
    ({"budget.gan_steps": 50_000}, r"^budget\.gan_steps: renamed budget\.generative_steps \(it "
                                   r"limits the VAE too\); rename the key in params\.yaml$"),
    ({"budget.gan_params": 10}, r"^budget\.gan_params: renamed budget\.generative_params "),
    ({"classifier.warmup_steps": 500}, r"^classifier\.warmup_steps: renamed classifier\.warmup "
                                       r"\(a fraction of classifier\.steps now, "),
    ({"vae.beta": -0.5}, r"^vae\.beta: -0\.5 is too small; it must be >= 0\.0$"),
    ({"generator.model": "diffusion"},
     r"^generator\.model: 'diffusion' is not allowed; choose one of gan, vae$"),
])
def test_out_of_range_values_name_the_limit(params_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        load_with(params_dir, overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"classifier.steps": 10_001, "budget.classifier_steps": 10_000},
     r"classifier\.steps: 10001 exceeds budget\.classifier_steps \(10000\); lower classifier\.steps"),
    ({"gan.steps": 30_000, "gan.n_dis": 2, "budget.generative_steps": 50_000},
     r"30000 x 2 = 60000 discriminator updates exceed budget\.generative_steps \(50000\); "
     r"lower gan\.steps to at most 25000"),
    ({"classifier.widths": [32, 64], "classifier.depths": [2, 2, 2]},
     r"need the same non-zero length"),
    ({"classifier.seeds": []}, r"classifier\.seeds: give at least one seed"),
    ({"generator.model": "vae", "vae.steps": 50_001, "budget.generative_steps": 50_000},
     r"vae\.steps: 50001 updates exceed budget\.generative_steps \(50000\), the generative models' "
     r"budget; lower vae\.steps"),
])
def test_inconsistent_budgets_and_shapes_are_rejected(params_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        load_with(params_dir, overrides)


def test_only_the_chosen_generative_models_steps_must_fit_the_budget(params_dir):
    vae = load_with(params_dir, {"generator.model": "vae", "budget.generative_steps": 100,
                                 "vae.steps": 100, "gan.steps": 50_000})
    assert vae.gan.steps > vae.budget.generative_steps  # the GAN is not trained, so it may
    with pytest.raises(UserError, match=r"^vae\.steps: 50000 updates exceed"):
        load_with(params_dir, {"vae.steps": 50_000})


def test_steps_exactly_at_the_budget_are_allowed(params_dir):
    params = load_with(params_dir, {"gan.steps": 25_000, "gan.n_dis": 2, "budget.generative_steps": 50_000})
    assert params.gan.steps * params.gan.n_dis == params.budget.generative_steps


def test_a_custom_source_requires_its_md5():
    with pytest.raises(UserError, match=r"data\.md5 is empty but data\.source is set: give the archive's md5"):
        DataParams(source="/archives/mine.tar.gz").resolved_md5
    custom = DataParams(source="/archives/mine.tar.gz", md5="ABCDEF0123456789ABCDEF0123456789")
    assert custom.resolved_source == "/archives/mine.tar.gz"
    assert custom.resolved_md5 == "abcdef0123456789abcdef0123456789"


@pytest.mark.parametrize("name", sorted(OFFICIAL_ARCHIVES))
def test_an_empty_source_means_the_official_archive_and_md5(name):
    official = DataParams(name=name)
    assert (official.resolved_source, official.resolved_md5) == OFFICIAL_ARCHIVES[name]


def test_missing_or_broken_params_file(tmp_path):
    with pytest.raises(UserError, match=r"params\.yaml: not found; run the stage from the repository root"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(UserError, match=r"params\.yaml: not valid YAML") as info:
        load_params(tmp_path / "params.yaml")
    assert "\n" not in str(info.value)


def test_a_key_given_twice_is_refused_with_both_lines(params_dir):
    path = params_dir / "params.yaml"
    text = path.read_text().replace("  lr: 0.2 ", "  lr: 0.2\n  lr: 0.3 ", 1)
    assert text != path.read_text()
    path.write_text(text)
    line = text.splitlines().index("  lr: 0.3                 # peak learning rate") + 1
    with pytest.raises(UserError, match=rf"params\.yaml: line {line}: key 'lr' given twice "
                                        rf"\(first on line {line - 1}\); keep one of them$"):
        load_params(path)
