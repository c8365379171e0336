"""The report's tables: results ordering and the book's Table 12-1 layout."""

from tasks.records import Config, ConfigResult
from tasks.tracking.report import cnn1d_grid, markdown_table, results_frame


def _result(name, acc, family="cnn1d", features="raw", augmented=False):
    config = Config(name.split("/")[0], features, family, augmented=augmented)
    assert config.name == name
    return ConfigResult(config, "r", "p.npy", cv_accuracy_mean=acc, cv_accuracy_sem=0.01, macro_f1_mean=acc)


def test_results_best_first_and_markdown_rows():
    frame = results_frame(
        [_result("rf5/raw", 0.2, "classical"), _result("cnn2d_logmel/logmel+aug", 0.88, "cnn2d", "logmel", True)]
    )
    assert frame["configuration"].tolist() == ["cnn2d_logmel/logmel+aug", "rf5/raw"]
    md = markdown_table(frame)
    assert "| cnn2d_logmel/logmel+aug | cnn2d | logmel + augmented | 88.0 ± 1.0 |" in md and md.count("\n") == 3


def test_cnn1d_grid_has_the_books_layout():
    results = [
        _result(f"cnn1d_{arch}_k{k}/raw", (i + 10 * j) / 100)
        for i, arch in enumerate(("deep2", "shallow", "medium"))
        for j, k in enumerate((33, 3, 7))
    ]
    results += [_result("cnn1d_shallow_k3/raw+aug", 0.5, augmented=True), _result("rf5/raw", 0.3, "classical")]
    grid = cnn1d_grid(results_frame(results))
    assert grid.columns.tolist() == ["k", "shallow", "shallow+aug", "medium", "deep2"]  # book's column order
    assert grid["k"].tolist() == [3, 7, 33]  # kernels ascending
    assert grid.loc[grid["k"] == 7, "medium"].item() == 22.0 and grid.loc[grid["k"] == 3, "shallow+aug"].item() == 50.0
    assert cnn1d_grid(results_frame([_result("rf5/raw", 0.3, "classical")])) is None
