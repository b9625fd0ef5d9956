"""The code file MLflow logs with every kernel predictor (models from code, no pickle): it names the model.

MLflow runs this file when it loads the model, after putting the model's copy of ``leti`` on the
path; see ``leti.tracking.pyfunc``.
"""

import mlflow.models

from leti.tracking.kernels import KernelPredictorModel

mlflow.models.set_model(KernelPredictorModel())
