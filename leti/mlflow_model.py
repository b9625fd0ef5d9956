"""The MLflow pyfunc wrapper of a leti predictor: a frame with an ``arch`` column in, ms out."""

import mlflow.pyfunc


class PredictorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001
        from leti import predictors

        self.predictor = predictors.load(context.artifacts["predictor"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        return self.predictor.predict(list(model_input["arch"]))
