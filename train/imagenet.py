"""The command `keras-resnet-train`: its usage (--help), flags and run are keras_resnet/scripts/imagenet.py."""

from keras_resnet.scripts.imagenet import main

if __name__ == "__main__":
    main()
