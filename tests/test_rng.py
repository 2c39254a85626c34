"""Noise from seeds, A1111's semantics: per-image generators, variation seeds, resized seeds, ENSD."""
import torch

from modules.sampling.rng import ImageRNG, randn

CPU = torch.device("cpu")


def test_each_image_has_its_own_stream():
    batch = ImageRNG((4, 8, 8), [10, 11], source="CPU")
    alone = ImageRNG((4, 8, 8), [11], source="CPU")
    assert torch.equal(batch.next()[1], alone.next()[0])
    assert torch.equal(batch.next()[1], alone.next()[0])  # the per-step noise too
    assert torch.equal(ImageRNG((4, 8, 8), [10], source="CPU").next()[0], randn(10, (4, 8, 8), "CPU", CPU))


def test_variation_seed_interpolates_towards_the_subseed_noise():
    base = ImageRNG((4, 8, 8), [1], source="CPU").next()
    zero = ImageRNG((4, 8, 8), [1], subseeds=[2], subseed_strength=0.0, source="CPU").next()
    full = ImageRNG((4, 8, 8), [1], subseeds=[2], subseed_strength=1.0, source="CPU").next()
    half = ImageRNG((4, 8, 8), [1], subseeds=[2], subseed_strength=0.5, source="CPU").next()
    assert torch.equal(base, zero)
    assert torch.allclose(full[0], randn(2, (4, 8, 8), "CPU", CPU), atol=1e-5)
    assert 0.4 < torch.nn.functional.cosine_similarity(half.flatten(), base.flatten(), dim=0) < 0.9


def test_resize_seed_from_puts_the_original_noise_in_the_middle():
    small = ImageRNG((4, 4, 4), [7], source="CPU").next()[0]
    big = ImageRNG((4, 8, 8), [7], seed_resize_from_h=32, seed_resize_from_w=32, source="CPU").next()[0]
    assert torch.equal(big[:, 2:6, 2:6], small)


def test_eta_noise_seed_delta_changes_only_the_step_noise():
    plain, delta = ImageRNG((4, 8, 8), [3], source="CPU"), ImageRNG((4, 8, 8), [3], source="CPU",
                                                                     eta_noise_seed_delta=31337)
    assert torch.equal(plain.next(), delta.next())
    step = delta.next()
    assert not torch.equal(plain.next(), step)
    assert torch.equal(step[0], randn(3 + 31337, (4, 8, 8), "CPU", CPU))
