"""KerasHub (Keras 3 on TensorFlow): a tiny random ``BertBackbone`` + classifier head trained with hf-optim-tf.

``create_optimizer`` + ``fit`` on KerasHub's ``BertTextClassifier``; which variables the weight decay touches, measured (one step with and one without
decay, everything else equal: exactly the variables whose path names no layer norm and no bias differ, by
``-lr * weight_decay_rate * w``); a ``.keras`` save after the first epoch, loaded without ``custom_objects``, trains
the second epoch to the weights, losses and learning rate of an uninterrupted two-epoch run, bit for bit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hf_optim_tf
import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

VOCAB = 64
SEQ = 8
EXAMPLES = 32
BATCH = 8  # 4 steps an epoch
EPOCHS = 2
LR = 1e-2
DECAY = 0.1
#: what create_optimizer keeps out of the decay (transformers' TF list), matched against the variable path
EXCLUDED = re.compile("LayerNorm|layer_norm|bias")

# Keras' fit converts variables with np.array(..., copy=False), which NumPy 2 warns about (not ours)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(autouse=True, scope="module")
def _deterministic() -> None:
    tf.config.experimental.enable_op_determinism()


def _backbone() -> keras_hub.models.BertBackbone:
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=SEQ,
        dropout=0.0,
    )


def _classifier() -> keras_hub.models.BertTextClassifier:
    """KerasHub's own task model on the backbone."""
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertTextClassifier(backbone=_backbone(), num_classes=2, preprocessor=None, dropout=0.0)


def _functional_classifier() -> keras.Model:
    """The backbone under a dense head in a functional model. KerasHub's task models override ``compile`` without
    ``compile_from_config``, so ``load_model`` of their ``.keras`` file warns and leaves them uncompiled (no optimizer
    state): a functional model is how a KerasHub backbone is resumed from one file."""
    keras.utils.set_random_seed(0)
    backbone = _backbone()
    logits = keras.layers.Dense(2, name="logits")(backbone(backbone.input)["pooled_output"])
    return keras.Model(backbone.input, logits, name="bert_classifier")


def _data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(1)
    token_ids = rng.integers(0, VOCAB, size=(EXAMPLES, SEQ)).astype("int32")
    features = {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": np.ones_like(token_ids),
    }
    return features, (token_ids[:, 0] < VOCAB // 2).astype("int32")


def _compile(model: keras.Model, weight_decay_rate: float, num_warmup_steps: int) -> Any:
    optimizer, schedule = hf_optim_tf.create_optimizer(
        init_lr=LR,
        num_train_steps=EPOCHS * EXAMPLES // BATCH,
        num_warmup_steps=num_warmup_steps,
        weight_decay_rate=weight_decay_rate,
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return schedule


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}


def test_weight_decay_touches_exactly_the_non_norm_non_bias_variables() -> None:
    x, y = _data()
    initial = _weights(_classifier())
    after = {}
    for rate in (DECAY, 0.0):
        model = _classifier()
        _compile(model, rate, num_warmup_steps=0)  # no warmup: the first step runs at LR
        model.fit(x, y, batch_size=EXAMPLES, epochs=1, shuffle=False, verbose=0)
        after[rate] = _weights(model)

    paths = set(initial)
    decayed = {path for path in paths if not np.array_equal(after[DECAY][path], after[0.0][path])}
    expected = {path for path in paths if not EXCLUDED.search(path)}
    assert decayed == expected
    # not vacuous: both kinds exist and every kind of layer is on the decayed side
    assert any("layer_norm/gamma" in path for path in paths - decayed)
    assert any(path.endswith("/bias") for path in paths - decayed)
    assert {"token_embedding/embeddings", "logits/kernel"} <= {path.split("/", 1)[-1] for path in decayed} | decayed
    # the difference is the decay term itself: decay first, then the same Adam step from the same gradient
    for path in decayed:
        np.testing.assert_allclose(
            after[DECAY][path] - after[0.0][path], -LR * DECAY * initial[path], rtol=1e-3, atol=1e-9, err_msg=path
        )


def test_keras_file_save_load_without_custom_objects_resumes_bit_for_bit(tmp_path: Path) -> None:
    x, y = _data()
    steps_per_epoch = EXAMPLES // BATCH

    full = _functional_classifier()
    full_schedule = _compile(full, DECAY, num_warmup_steps=2)
    full_history = full.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0).history["loss"]

    first = _functional_classifier()
    _compile(first, DECAY, num_warmup_steps=2)
    first_history = first.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history["loss"]
    first.save(tmp_path / "classifier.keras")
    del first
    keras.backend.clear_session()

    resumed = keras.saving.load_model(tmp_path / "classifier.keras")  # no custom_objects: registered classes
    assert [type(layer) for layer in resumed.layers].count(keras_hub.models.BertBackbone) == 1
    assert type(resumed.optimizer) is hf_optim_tf.AdamWeightDecay
    schedule = resumed.optimizer.get_config()["learning_rate"]  # the serialized schedule, not its current value
    assert schedule == full.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == type(full_schedule).__name__ == "WarmUp"
    assert int(resumed.optimizer.iterations) == steps_per_epoch
    second_history = resumed.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history["loss"]

    assert first_history + second_history == full_history
    assert int(resumed.optimizer.iterations) == int(full.optimizer.iterations) == EPOCHS * steps_per_epoch
    resumed_lr = keras.ops.convert_to_numpy(resumed.optimizer.learning_rate)  # the schedule at `iterations`
    assert np.array_equal(resumed_lr, keras.ops.convert_to_numpy(full.optimizer.learning_rate))
    resumed_weights, full_weights = _weights(resumed), _weights(full)
    assert resumed_weights.keys() == full_weights.keys()
    for path, value in full_weights.items():
        assert np.array_equal(resumed_weights[path], value), path
    for a, b in zip(resumed.optimizer.variables, full.optimizer.variables):
        assert a.path == b.path, (a.path, b.path)
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)), a.path
