import pytest

from tasks.tracking import runs as tracking


def test_flatten_nested_params():
    flat = tracking.flatten({"a": 1, "b": {"c": [1, 2], "d": {"e": "x"}}})
    assert flat == {"a": "1", "b.c": "[1, 2]", "b.d.e": "x"}


def test_failed_block_marks_run_failed():
    exp = tracking.ensure_experiment("test-tracking")
    with pytest.raises(RuntimeError):
        with tracking.run(exp, name="boom", params={"model": "x"}) as run_id:
            tracking.log_metrics(run_id, {"m": 0.5})
            raise RuntimeError("bad input in foo.wav")
    r = tracking.client().get_run(run_id)
    assert r.info.status == "FAILED"
    assert "foo.wav" in r.data.tags["error"]
    assert r.data.metrics["m"] == 0.5


def test_nested_runs_with_explicit_ids_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    exp = tracking.ensure_experiment("test-tracking")
    parent = tracking.start_run(exp, name="parent")

    def child(i):
        with tracking.run(exp, name=f"child{i}", params={"i": i}, parent_id=parent) as rid:
            tracking.log_batch(rid, series={"fold_accuracy": [i / 10, i / 10 + 0.01]})
        return rid

    with ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(child, range(4)))
    tracking.end_run(parent)
    c = tracking.client()
    for i, rid in enumerate(ids):
        r = c.get_run(rid)
        assert r.data.tags["mlflow.parentRunId"] == parent
        assert r.data.params["i"] == str(i)
        hist = c.get_metric_history(rid, "fold_accuracy")
        assert [m.step for m in hist] == [0, 1] and hist[0].value == pytest.approx(i / 10)


def test_keras_model_logged_in_keras_flavor_reloads_identically(rng, tmp_path):
    import keras
    import mlflow.keras
    import numpy as np

    from tasks.models.nets import build_model

    keras.utils.set_random_seed(0)
    model = build_model("cnn1d_shallow", (882, 1), 10)
    x = rng.random((3, 882, 1)).astype("float32")
    exp = tracking.ensure_experiment("test-tracking")
    with tracking.run(exp, name="keras") as rid:
        (tmp_path / "model_fold0").mkdir()
        tracking.save_keras_model(model, x, tmp_path / "model_fold0")
        tracking.log_folder(rid, tmp_path / "model_fold0", "model_fold0")
    files = {a.path for a in tracking.client().list_artifacts(rid, "model_fold0")}
    assert "model_fold0/MLmodel" in files
    reloaded = mlflow.keras.load_model(f"runs:/{rid}/model_fold0")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    info = mlflow.models.get_model_info(f"runs:/{rid}/model_fold0")
    assert info.signature is not None and tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (
        -1,
        882,
        1,
    )
