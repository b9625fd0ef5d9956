"""The MLflow pyfunc wrapper of a leti predictor: a frame with an ``arch`` column in, ms out."""

from __future__ import annotations

import mlflow.pyfunc


class PredictorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from leti import predictors

        self.predictor = predictors.load(context.artifacts["predictor"])

    def predict(self, context, model_input, params=None):
        return self.predictor.predict(list(model_input["arch"]))
