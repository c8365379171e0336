"""The models-from-code file logged with every soundflow pyfunc: it names the model class (no pickled object).

MLflow runs this file when it loads the model, after putting the model's bundled code (the `tasks` package)
on sys.path; the estimators, the combiner and the config are loaded from the artifacts in load_context."""

from mlflow.models import set_model

from tasks.tracking.pyfunc import AudioClassifier

set_model(AudioClassifier())
