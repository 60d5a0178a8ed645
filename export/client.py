"""The command `keras-resnet-client`: its usage (--help), flags and run are keras_resnet/scripts/client.py."""

from keras_resnet.scripts.client import main

if __name__ == "__main__":
    main()
