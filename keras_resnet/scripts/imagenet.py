"""Train an ImageNet network with the recipe of section 3.4.

    python train/imagenet.py --data_dir ~/data/imagenet --model resnet50 --strategy mirrored
    python train/imagenet.py --data_dir DIR --lr_schedule steps --train_epochs 90     # 30/60/90
    python train/imagenet.py --data_dir DIR --batch_size 1024 --lr_scaling linear --warmup_epochs 5

Every flag defaults to the paper: batch 256, lr 0.1 divided by 10 when the validation error
plateaus, 60e4 iterations, momentum 0.9, weight decay 1e-4, shortcut B. Rerunning the same
command resumes from the latest checkpoint in --model_dir.

--data_dir holds one of (what was found is printed at start: images per split and class,
class names, files skipped and why):
  your own images  DIR/train/<class>/<image> and DIR/validation/<class>/<image> (or val/;
                   or train/ alone with --val_split 0.1); .jpg .jpeg .png .gif .bmp of any
                   size and colour mode; the data set is named after DIR (or --dataset NAME)
  ImageNet         TFRecord shards DIR/train-00000-of-01024 ..., or a TFDS data dir
"""

from absl import flags

from keras_resnet.scripts import run_program
from keras_resnet.training import cli
from keras_resnet.training.config import recipe

cli.define_flags(recipe("imagenet"))
flags.adopt_module_key_flags(cli)
FLAGS = flags.FLAGS


def run():
    from keras_resnet.training.loop import train

    return train(cli.config_from_flags(FLAGS))


def main():
    """`keras-resnet-train`, and `python train/imagenet.py`."""
    run_program(__name__, cli.absl_main(run), flags_parser=cli.parse_flags)
