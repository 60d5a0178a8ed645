"""Export for serving: a TF Serving SavedModel and ONNX, each verified against the Keras model.

    from keras_resnet.export import export_run, from_run_dir, export_saved_model, export_onnx
    export_run("runs/demo")                     # both formats, checked, with serving hints
    source = from_run_dir("runs/demo")
    export_saved_model(source, "/srv/models")   # /srv/models/resnet20/<next version>/
    export_onnx(source, "resnet20.onnx", int8=True, calibration_images=images)

The serving graph folds every BatchNormalization into its conv and the preprocessing's channel
order and scale into the first conv (folding.py), and adds the rest of the preprocessing in
front, so clients send RGB images in 0..255 (or encoded JPEG/PNG bytes).
"""

from keras_resnet.export.folding import serving_model
from keras_resnet.export.graph import ServingGraph
from keras_resnet.export.onnx import OnnxExport, export_onnx
from keras_resnet.export.run import RunExport, export_run
from keras_resnet.export.saved_model import SavedModelExport, export_saved_model
from keras_resnet.export.sources import ModelSource, from_builder, from_keras_file, from_run_dir
from keras_resnet.export.verify import VerificationError, verify_onnx, verify_saved_model

__all__ = [
    "ModelSource",
    "OnnxExport",
    "RunExport",
    "SavedModelExport",
    "ServingGraph",
    "VerificationError",
    "export_onnx",
    "export_run",
    "export_saved_model",
    "from_builder",
    "from_keras_file",
    "from_run_dir",
    "serving_model",
    "verify_onnx",
    "verify_saved_model",
]
