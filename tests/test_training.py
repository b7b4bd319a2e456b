"""distill/training.py: the pieces the Trainer uses."""
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from distill.training import EpochSeededSampler


def test_an_epochs_training_order_depends_on_the_seed_and_the_epoch_only_not_on_earlier_random_draws():
    lengths = [(i * 37) % 23 + 1 for i in range(64)]

    def order(epoch, draws_before):
        sampler = EpochSeededSampler(LengthGroupedSampler(8, lengths=lengths), seed=42)
        torch.manual_seed(draws_before)  # what dropout and evaluation drew before the epoch began
        torch.rand(draws_before + 1)
        sampler.set_epoch(epoch)
        return list(sampler)

    # a resumed run reaches epoch 2 with another global generator state than the uninterrupted run
    assert order(2, 0) == order(2, 1234)
    assert order(0, 5) == order(0, 99)
    assert order(1, 0) != order(2, 0)  # epochs still differ from one another
    assert sorted(order(1, 0)) == list(range(64))
