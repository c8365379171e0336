"""The case-study flow end to end on a small real ESC-10 subset, read back from MLflow."""

import pytest
from mlflow import MlflowClient

from flows.params import preset
from tasks import config
from tasks.errors import SoundflowError


@pytest.fixture(scope="module")
def smoke_run(prefect_harness, esc10_dir):
    from flows.case_study import case_study

    params = preset("smoke", source=str(esc10_dir), experiment="test-flow")
    first = case_study(params)
    second = case_study(params)
    return params, first, second


def _children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_parent_and_child_runs(smoke_run):
    params, first, _ = smoke_run
    c = MlflowClient(config.tracking_uri())
    parent = c.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"]
    assert parent.data.params["seed"] == str(params.seed)
    assert parent.data.params["augmentation.n_copies"] == "1"
    assert parent.inputs.dataset_inputs, "manifest logged as the dataset input"
    assert c.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    note = parent.data.tags["mlflow.note.content"]
    assert (
        first.dataset == "esc10"
        and first.dataset in note
        and first.best.name in note
        and f"{100 * first.best.cv_accuracy_mean:.1f}" in note
    )
    arts = {a.path for a in c.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/results.md",
        "report/results.csv",
        "report/comparison.png",
        "report/spectrogram_examples.png",
        "report/index.html",
    } <= arts
    page = open(first.report, encoding="utf-8").read()  # kept under data/reports/<run id>/
    assert first.report.startswith(str(config.data_dir() / "reports")) and first.best.name in page
    # the leakage audit ran on the official folds and found nothing crossing them
    assert parent.data.tags["soundflow.audit.group_pattern"] == ""
    assert "audit/summary.md" in {a.path for a in c.list_artifacts(parent.info.run_id, "audit")}

    children = _children(c, parent.info.run_id)
    names = {r.info.run_name for r in children}
    assert "rbf_svm/engineered" in names and "gaussian_nb/engineered+aug" in names
    assert any(n.startswith("ensemble:") for n in names)
    aug_run = next(r for r in children if r.info.run_name == "gaussian_nb/engineered+aug")
    assert aug_run.data.params["augmented"] == "True" and aug_run.data.params["augmentation.n_copies"] == "1"
    for r in children:
        assert r.info.status == "FINISHED"
        assert 0.0 <= r.data.metrics["cv_accuracy_mean"] <= 1.0
        assert r.data.metrics["cv_accuracy_sem"] >= 0
        if r.data.tags.get("soundflow.kind") == "model":
            assert {"model", "features"} <= set(r.data.params)
            hist = c.get_metric_history(r.info.run_id, "fold_accuracy")
            assert sorted(m.step for m in hist) == [0, 1, 2, 3, 4]
            files = {a.path for a in c.list_artifacts(r.info.run_id)}
            assert {"confusion_matrix.png", "confusion_matrix.csv", "classification_report.txt"} <= files
    # engineered features separate classes far better than chance even on 100 clips
    best = max(r.data.metrics["cv_accuracy_mean"] for r in children if "engineered" in r.info.run_name)
    assert best > 0.5


@pytest.mark.parametrize("which", [1, 2])
def test_deep_runs_have_learning_curves(smoke_run, which):
    """Both runs: the second (every fold reused) logs the curves and the network the first one rendered."""
    run_summary = smoke_run[which]
    c = MlflowClient(config.tracking_uri())
    runs = {r.info.run_name: r for r in _children(c, run_summary.parent_run_id)}
    for name in ("cnn2d_logmel/logmel+aug", "cnn1d_shallow_k3/raw", "mlp_keras/engineered"):
        run = runs[name]
        assert run.data.params["family"] in ("cnn1d", "cnn2d", "mlp")
        loss = c.get_metric_history(run.info.run_id, "fold0_loss")
        assert len(loss) >= 2 and [m.step for m in loss] == list(range(len(loss)))
        files = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert {"learning_curve.png", "model_fold0", "confusion_matrix.png"} <= files
        assert "model_fold0/MLmodel" in {a.path for a in c.list_artifacts(run.info.run_id, "model_fold0")}
    assert "cnn2d_logmel/logmel" not in runs  # the log-mel CNN trains on augmented folds only


def test_second_run_reuses_results(smoke_run):
    _, first, second = smoke_run
    assert second.parent_run_id != first.parent_run_id
    assert second.accuracies() == first.accuracies()  # same seed, same data: same numbers
    c = MlflowClient(config.tracking_uri())
    reused = [r for r in _children(c, second.parent_run_id) if r.data.tags.get("soundflow.kind") == "model"]
    assert reused and all(r.data.tags.get("soundflow.reused") == "true" for r in reused)
    # each run's nested runs name its own Prefect flow run (the lookup is kept per flow run, not per process)
    flow_runs = [c.get_run(s.parent_run_id).data.tags["prefect.flow_run_id"] for s in (first, second)]
    assert flow_runs[0] != flow_runs[1] and {r.data.tags["prefect.flow_run_id"] for r in reused} == {flow_runs[1]}
    ensembles = [r for r in _children(c, second.parent_run_id) if r.data.tags.get("soundflow.kind") == "ensemble"]
    assert ensembles and all(
        {"confusion_matrix.png", "members.json"} <= {a.path for a in c.list_artifacts(e.info.run_id)} for e in ensembles
    )
    # the folds are read back in the flow's process: no fold task runs (each would start a worker)
    assert _fold_tasks(c, first.parent_run_id) and not _fold_tasks(c, second.parent_run_id)


def _fold_tasks(client: MlflowClient, parent_run_id: str) -> list[str]:
    """The names of the fold tasks the flow behind an MLflow parent run ran (in its cross-validation subflow)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    flow_run_id = client.get_run(parent_run_id).data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as prefect:
        subflows = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(str(f.id) for f in subflows)]
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return [r.name for r in runs if r.name.startswith("fit ")]


def test_failing_flow_marks_mlflow_run_failed(prefect_harness, esc10_dir):
    from flows.case_study import case_study

    # Valid parameters, but the 1D CNN cannot be built (kernel 0): its fold tasks fail in pool workers, while
    # the other configuration goes on and is logged; the flow then fails, naming the configuration.
    params = preset(
        "smoke",
        source=str(esc10_dir),
        experiment="test-flow-fail",
        models=["cnn1d_shallow_k3", "gaussian_nb"],
        features=["raw"],
        augmented=[],
        ensembles=[],
        hyper={"cnn1d_shallow_k3": {"epochs": 1, "kernel": 0}},
    )
    with pytest.raises(SoundflowError, match=r"cnn1d_shallow_k3/raw: fold \d failed: ValueError"):
        case_study(params)
    c = MlflowClient(config.tracking_uri())
    exp = c.get_experiment_by_name("test-flow-fail")
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    assert (
        runs["cnn1d_shallow_k3/raw"].info.status == "FAILED"
        and "ValueError" in runs["cnn1d_shallow_k3/raw"].data.tags["error"]
    )
    assert runs["gaussian_nb/raw"].info.status == "FINISHED"  # the others went on
    parents = [r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags]
    assert parents and all(r.info.status == "FAILED" for r in parents)
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]


def test_pool_workers_get_the_flow_api_only_while_training(prefect_harness, monkeypatch):
    import os

    from tasks import config

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with config.workers_share_prefect_api():
        url = os.environ["PREFECT_API_URL"]
        assert url.startswith("http://127.0.0.1") and url.rstrip("/").endswith("/api")
    assert "PREFECT_API_URL" not in os.environ  # the temporary server dies with the flow: don't keep it
    monkeypatch.setenv("PREFECT_API_URL", "http://example.invalid/api")
    with config.workers_share_prefect_api():
        assert os.environ["PREFECT_API_URL"] == "http://example.invalid/api"  # a configured server wins


def test_progress_artifact_and_closing_summary(smoke_run):
    from prefect.client.orchestration import get_client

    from tasks.tracking.run_summary import summary_text

    _, first, _ = smoke_run
    flow_run_id = MlflowClient(config.tracking_uri()).get_run(first.parent_run_id).data.tags["prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        # the API directly: Prefect 3.8.8's read_artifacts sends null filters its own server rejects (422)
        subflows = client._client.post(
            "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"operator": "and_", "any_": [flow_run_id]}}}
        ).json()
        ids = [flow_run_id, *(f["id"] for f in subflows)]  # the cross-validation runs as a subflow
        resp = client._client.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": ids}}})
    progress = [a for a in resp.json() if a["type"] == "progress"]
    assert len(progress) == 1 and float(progress[0]["data"]) == pytest.approx(100.0)
    assert "folds" in progress[0]["description"] and "left" in progress[0]["description"]
    text = summary_text(first)
    best = first.best
    assert f"{100 * best.cv_accuracy_mean:5.1f} +- {100 * best.cv_accuracy_sem:.1f}" in text
    assert first.parent_run_id in text and "soundflow predict" in text
