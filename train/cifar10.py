"""The command `keras-resnet-train-cifar10`: its usage (--help), flags and run are keras_resnet/scripts/cifar10.py."""

from keras_resnet.scripts.cifar10 import main

if __name__ == "__main__":
    main()
