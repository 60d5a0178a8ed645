"""Learning-rate schedules against the paper's recipes (sections 3.4 and 4.2)."""

import math

import pytest
import tensorflow as tf

from keras_resnet.training import config as config_lib
from keras_resnet.training import schedules

CIFAR_TRAIN = 45_000  # the paper's CIFAR-10 schedule was chosen on a 45k/5k split
IMAGENET_TRAIN = 1_281_167


def schedule_of(config, num_examples=CIFAR_TRAIN):
    resolved, info = config_lib.resolve(config, num_examples, 10, (32, 32))
    return resolved, schedules.from_config(resolved, config_lib.base_learning_rate(resolved), info["steps_per_epoch"])


def test_cifar_recipe_is_section_4_2():
    config, lr = schedule_of(config_lib.recipe("cifar"))
    assert (config.batch_size, config.momentum, config.weight_decay, config.train_steps) == (128, 0.9, 1e-4, 64_000)
    # "start with a learning rate of 0.1, divide it by 10 at 32k and 48k iterations"
    for step, expected in [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001), (63_999, 0.001)]:
        assert float(lr(step)) == pytest.approx(expected, rel=1e-12), step


def test_resnet110_warmup_is_automatic_for_n_18_only():
    assert schedule_of(config_lib.recipe("cifar", model="resnet110"))[0].error_warmup is True
    assert schedule_of(config_lib.recipe("cifar", model="resnet1202"))[0].error_warmup is True
    assert schedule_of(config_lib.recipe("cifar", model="resnet56"))[0].error_warmup is False
    assert schedule_of(config_lib.recipe("cifar", model="resnet20", error_warmup=True))[0].error_warmup is True


def test_resnet110_warmup_switches_once_running_error_is_below_80_percent():
    _, lr = schedule_of(config_lib.recipe("cifar", model="resnet110"))
    step = 0
    for _ in range(100):  # errors at or above 80 %: lr stays 0.01 (section 4.2)
        assert float(lr(step)) == 0.01
        lr.observe_train_error(0.9 if step % 2 else 0.8)
        step += 1
    lr.observe_train_error(0.70)  # one lucky batch does not end the warm-up: the error is a running one
    step += 1
    assert float(lr(step)) == 0.01
    switched_at = None
    for _ in range(100):
        lr.observe_train_error(0.5)
        step += 1
        if float(lr(step)) == 0.1:
            switched_at = step
            break
    assert switched_at is not None and switched_at < 130
    for error in (0.95, 0.99, 0.9):  # once over, it stays over, and the step schedule applies
        lr.observe_train_error(error)
        step += 1
        assert float(lr(step)) == 0.1
    assert float(lr(32_000)) == pytest.approx(0.01) and float(lr(48_000)) == pytest.approx(0.001)


def test_warmup_state_is_checkpointed(tmp_path):
    _, lr = schedule_of(config_lib.recipe("cifar", model="resnet110"))
    for _ in range(50):
        lr.observe_train_error(0.3)
    assert float(lr(10)) == 0.1
    path = tf.train.Checkpoint(schedule=lr).save(str(tmp_path / "ckpt"))
    _, fresh = schedule_of(config_lib.recipe("cifar", model="resnet110"))
    assert float(fresh(10)) == 0.01
    tf.train.Checkpoint(schedule=fresh).restore(path).assert_consumed()
    assert float(fresh(10)) == 0.1


def test_imagenet_recipe_is_section_3_4_with_plateau_division():
    config = config_lib.recipe("imagenet", plateau_patience=3)
    assert (config.model, config.batch_size, config.learning_rate, config.momentum, config.weight_decay) == (
        "resnet50",
        256,
        0.1,
        0.9,
        1e-4,
    )
    assert config.train_steps == 600_000  # "up to 60 x 10^4 iterations"
    _, lr = schedule_of(config, IMAGENET_TRAIN)
    assert float(lr(0)) == 0.1
    for error in (0.60, 0.50, 0.45, 0.45, 0.4495, 0.45):  # three evaluations without a 0.1 % gain
        assert float(lr(1000)) == 0.1
        divided = lr.observe_eval_error(error)
    assert divided and float(lr(1000)) == pytest.approx(0.01)
    for error in (0.30, 0.31, 0.32, 0.33):
        lr.observe_eval_error(error)
    assert float(lr(1000)) == pytest.approx(0.001)


def test_imagenet_fixed_epoch_steps_30_60_90():
    config, lr = schedule_of(config_lib.recipe("imagenet", lr_schedule="steps", train_epochs=90), IMAGENET_TRAIN)
    per_epoch = IMAGENET_TRAIN // 256
    assert config.train_steps == 90 * per_epoch
    assert config.lr_boundaries == (30 * per_epoch, 60 * per_epoch, 90 * per_epoch)
    assert [float(lr(e * per_epoch - 1)) for e in (30, 60, 90)] == pytest.approx([0.1, 0.01, 0.001])
    assert [float(lr(e * per_epoch)) for e in (30, 60)] == pytest.approx([0.01, 0.001])


def test_linear_scaling_and_gradual_warmup_for_large_batches():
    config = config_lib.recipe("imagenet", batch_size=1024, lr_scaling="linear", warmup_epochs=5, lr_schedule="steps")
    resolved, lr = schedule_of(config, IMAGENET_TRAIN)
    per_epoch = IMAGENET_TRAIN // 1024
    assert config_lib.base_learning_rate(resolved) == pytest.approx(0.4)  # Goyal et al.: 0.1 x 1024 / 256
    assert float(lr(0)) == pytest.approx(0.4 / (5 * per_epoch))
    assert float(lr(5 * per_epoch // 2 - 1)) == pytest.approx(0.2, rel=1e-3)
    assert float(lr(5 * per_epoch)) == pytest.approx(0.4)


def test_cosine_decay_ends_at_zero():
    _, lr = schedule_of(config_lib.recipe("cifar", lr_schedule="cosine", train_steps=1000))
    assert float(lr(0)) == pytest.approx(0.1)
    assert float(lr(500)) == pytest.approx(0.05)
    assert float(lr(1000)) == pytest.approx(0.0, abs=1e-12)
    assert all(float(lr(s)) >= float(lr(s + 1)) for s in range(0, 1000, 7))
    assert math.isclose(schedules.cosine_decay(250, 1.0, 1000), (1 + math.cos(math.pi / 4)) / 2)
