"""Each architecture builds with the book's layer list (Kneusel ch. 12) and the right output shape."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models.nets import MODEL_NAMES, build_model, layer_summary

CONV_BLOCK = ["Conv1D", "Conv1D", "MaxPooling1D", "Dropout"]
HEAD = ["Flatten", "Dense", "Dropout", "Dense"]
MEDIUM = ["Conv1D", "Conv1D", "Conv1D", "MaxPooling1D", "Dropout"]
BOOK_1D = {
    "cnn1d_shallow": ["Conv1D", "MaxPooling1D", "Dropout"] + HEAD,
    "cnn1d_medium": MEDIUM + HEAD,
    "cnn1d_deep0": MEDIUM + CONV_BLOCK + HEAD,
    "cnn1d_deep1": MEDIUM + 2 * CONV_BLOCK + HEAD,
    "cnn1d_deep2": MEDIUM + 3 * CONV_BLOCK + HEAD,
}
BOOK_2D = ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "MaxPooling2D", "Dropout"] + HEAD


def test_model_names_cover_every_builder():
    assert set(MODEL_NAMES) == {"mlp", "cnn2d_book", "cnn2d_logmel", *BOOK_1D}


@pytest.mark.parametrize("name", sorted(BOOK_1D))
@pytest.mark.parametrize("kernel", [3, 7])
def test_cnn1d_matches_the_book(name, kernel):
    model = build_model(name, (882, 1), 10, kernel=kernel)
    assert layer_summary(model) == BOOK_1D[name]
    assert model.output_shape == (None, 10)
    first = model.layers[1]
    assert first.kernel_size == (kernel,) and first.filters == 32
    assert not model.compiled  # the trainer compiles


def test_cnn1d_accepts_flat_vectors(rng):
    model = build_model("cnn1d_deep0", (882,), 4)
    assert layer_summary(model) == ["Reshape"] + BOOK_1D["cnn1d_deep0"]
    out = model(rng.normal(size=(2, 882)).astype(np.float32))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kernel", [3, 7])
def test_cnn2d_book_matches_the_book(kernel):
    model = build_model("cnn2d_book", (100, 160, 3), 10, kernel=kernel)
    assert layer_summary(model) == BOOK_2D
    assert model.output_shape == (None, 10)
    assert model.layers[1].kernel_size == (kernel, kernel)
    if kernel == 3:
        assert model.count_params() == 7_217_546  # "about 7.2 million parameters"


def test_cnn2d_logmel_is_compact_and_length_agnostic(rng):
    model = build_model("cnn2d_logmel", (64, None, 1), 10)
    assert 90_000 < model.count_params() < 110_000  # widths 16, 32, 64, 128
    names = layer_summary(model)
    assert names.count("Conv2D") == 4 and names.count("BatchNormalization") == 4
    assert names[-3:] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    for frames in (172, 216):
        assert model(rng.normal(size=(2, 64, frames, 1)).astype(np.float32)).shape == (2, 10)


def test_cnn2d_logmel_time_stats_head_keeps_the_bands_and_survives_a_save(rng, tmp_path):
    import keras

    from tasks.models.nets import TimeStatsPooling

    model = build_model("cnn2d_logmel", (64, None, 1), 10, widths=(4, 8, 8, 8), pooling="time_stats")
    assert layer_summary(model)[-3:] == ["TimeStatsPooling", "Dropout", "Dense"]
    assert model.layers[-1].input.shape[-1] == 8 * 8 * 2  # 64 mels / 2^3 poolings x 8 channels x (mean, std)
    t = rng.normal(size=(2, 3, 7, 4)).astype(np.float32)  # (batch, bands, frames, channels)
    pooled = TimeStatsPooling()(t).numpy().reshape(2, 3, 8)
    np.testing.assert_allclose(pooled[..., :4], t.mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(pooled[..., 4:], np.sqrt(t.var(axis=2) + 1e-6), atol=1e-5)
    x = rng.normal(size=(2, 64, 100, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        build_model("cnn2d_logmel", (64, None, 1), 10, pooling="max")


def test_cnn2d_logmel_adds_channel_axis():
    model = build_model("cnn2d_logmel", (32, 40), 3, widths=(4, 8, 8, 8))
    assert layer_summary(model)[0] == "Reshape"
    assert model.output_shape == (None, 3)


def test_mlp():
    model = build_model("mlp", (882,), 10)
    assert layer_summary(model) == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [layer.units for layer in model.layers if type(layer).__name__ == "Dense"] == [512, 128, 10]
    assert build_model("mlp", (8, 5), 3, hidden=(16,)).output_shape == (None, 3)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", (882,), 10)
    with pytest.raises(ValueError, match="hyper-parameters"):
        build_model("cnn1d_shallow", (882,), 10, kernal=3)
    with pytest.raises(ValueError, match="axes"):
        build_model("cnn2d_book", (882,), 10)
