"""The command `keras-resnet-export-saved-model`: its usage (--help), flags and run are keras_resnet/scripts/to_saved_model.py."""

from keras_resnet.scripts.to_saved_model import main

if __name__ == "__main__":
    main()
