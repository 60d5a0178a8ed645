"""Train a CIFAR-10 network with the recipe of section 4.2, or the offline demo.

    python train/cifar10.py --demo
    python train/cifar10.py --data_dir ~/data/cifar10 --model resnet110 --model_dir runs/r110
    python train/cifar10.py --dataset digits --model resnet20 --train_steps 500 --lr_boundaries 300,400
    python train/cifar10.py --data_dir ~/data/my_images --val_split 0.1 --image_size 32   # class folders

Every flag defaults to the paper: batch 128, lr 0.1 divided by 10 at 32k and 48k, stop at
64k, momentum 0.9, weight decay 1e-4; ResNet-110's warm-up turns on by itself for n >= 18.
Rerunning the same command resumes from the latest checkpoint in --model_dir.
"""

from absl import flags

from keras_resnet.scripts import run_program
from keras_resnet.training import cli
from keras_resnet.training.config import recipe

cli.define_flags(recipe("cifar"))
flags.adopt_module_key_flags(cli)
flags.DEFINE_bool(
    "demo",
    False,
    "Train ResNet-20 on the bundled digits data (offline, CPU, a few minutes), evaluate, print the test error, "
    "then export it to a TF Serving SavedModel and to ONNX (fp32, int8), each verified; writes runs/demo/.",
)
FLAGS = flags.FLAGS


def run():
    if FLAGS.demo:
        from keras_resnet.export import export_run
        from keras_resnet.training.demo import run_demo

        export_run(run_demo())
        return
    from keras_resnet.training.loop import train

    return train(cli.config_from_flags(FLAGS))


def main():
    """`keras-resnet-train-cifar10`, and `python train/cifar10.py`."""
    run_program(__name__, cli.absl_main(run), flags_parser=cli.parse_flags)
