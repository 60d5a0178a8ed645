"""The command `keras-resnet-responses`: its usage (--help), flags and run are keras_resnet/scripts/responses.py."""

from keras_resnet.scripts.responses import main

if __name__ == "__main__":
    main()
