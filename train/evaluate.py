"""The command `keras-resnet-evaluate`: its usage (--help), flags and run are keras_resnet/scripts/evaluate.py."""

from keras_resnet.scripts.evaluate import main

if __name__ == "__main__":
    main()
