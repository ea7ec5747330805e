"""The [trainer] section of the schema (physml_md/config/trainer.py)."""

from physml_md.config.load import trainer_kwargs
from tests.training.helpers import fails, validated


def test_inference_mode_true_is_refused():
    fails({"trainer": {"inference_mode": True}}, "trainer.inference_mode = True is not allowed: forces need autograd")
    fails({"trainer": {"inference_mode": "yes"}}, "trainer.inference_mode = 'yes' is not allowed")
    fails({"trainer": {"logger": False}}, "trainer.logger is set by physml-md")
    assert trainer_kwargs(validated({"trainer": {"inference_mode": False}}))["inference_mode"] is False


def test_callback_specs_are_validated_at_load():
    fails({"trainer": {"callbacks": {"class_path": "a.B"}}}, "trainer.callbacks must be a list of tables")
    fails({"trainer": {"callbacks": [{"class_path": 3}]}}, "trainer.callbacks[0].class_path must be a dotted name")
    fails(
        {"trainer": {"callbacks": [{"class_path": "LearningRateMonitor"}]}},
        "trainer.callbacks[0].class_path must be a dotted name",
    )
    monitor = "lightning.pytorch.callbacks.LearningRateMonitor"
    fails(
        {"trainer": {"callbacks": [{"class_path": monitor, "init_args": [1]}]}},
        "callbacks[0].init_args must be a table",
    )
    specs = validated({"trainer": {"callbacks": [{"class_path": "a.B"}]}}).trainer["callbacks"]
    assert specs == [{"class_path": "a.B", "init_args": {}}]
