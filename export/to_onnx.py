"""The command `keras-resnet-export-onnx`: its usage (--help), flags and run are keras_resnet/scripts/to_onnx.py."""

from keras_resnet.scripts.to_onnx import main

if __name__ == "__main__":
    main()
