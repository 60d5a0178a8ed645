"""The command `keras-resnet-compare`: its usage (--help), flags and run are keras_resnet/scripts/compare.py."""

from keras_resnet.scripts.compare import main

if __name__ == "__main__":
    main()
