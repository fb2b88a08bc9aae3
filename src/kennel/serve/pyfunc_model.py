"""Models-from-code entry point: MLflow runs this file to build the pyfunc when a kennel
model loads (no pickled Python object in the model). ``code/kennel`` is on ``sys.path``."""

from mlflow.models import set_model

from kennel.serve.pyfunc import KennelPyfunc

set_model(KennelPyfunc())
