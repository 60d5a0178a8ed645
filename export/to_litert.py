"""The command `keras-resnet-export-litert`: its usage (--help), flags and run are keras_resnet/scripts/to_litert.py."""

from keras_resnet.scripts.to_litert import main

if __name__ == "__main__":
    main()
