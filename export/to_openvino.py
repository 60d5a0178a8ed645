"""The command `keras-resnet-export-openvino`: its usage (--help), flags and run are keras_resnet/scripts/to_openvino.py."""

from keras_resnet.scripts.to_openvino import main

if __name__ == "__main__":
    main()
