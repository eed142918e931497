"""The conditional VAE: label conditioning, the reparameterization, loading for sampling and
for the metrics."""
import torch

from cifarbudget.io import save_checkpoint
from cifarbudget.models.gan import ConditionalBatchNorm2d
from cifarbudget.models.vae import ConditionalVAE, load_sampler

Z_DIM, CLASSES = 16, 5


def trained_looking_vae(seed: int = 0) -> ConditionalVAE:
    """A VAE whose per-class parameters differ, as after training (at initialisation every
    class has the same decoder gains and biases and a zero encoder bias)."""
    torch.manual_seed(seed)
    vae = ConditionalVAE(Z_DIM, CLASSES, encoder_width=8, decoder_width=16)
    for layer in vae.modules():
        if isinstance(layer, ConditionalBatchNorm2d):
            torch.nn.init.normal_(layer.gain, 1.0, 0.3)
            torch.nn.init.normal_(layer.bias, 0.0, 0.3)
    torch.nn.init.normal_(vae.encoder.class_bias.weight, 0.0, 0.3)
    return vae.eval()


def test_the_decoders_output_changes_with_the_label_for_the_same_latent():
    decoder = trained_looking_vae().decoder
    z = torch.randn(1, Z_DIM).repeat(CLASSES, 1)
    images = decoder(z, torch.arange(CLASSES))
    assert images.shape == (CLASSES, 3, 32, 32)
    assert images.abs().max() <= 1  # tanh: the pixel range of the data
    differences = (images[:, None] - images[None]).abs().flatten(2).mean(2)
    assert (differences + torch.eye(CLASSES) > 1e-3).all()  # every pair of classes differs


def test_the_encoder_is_conditioned_on_the_label():
    encoder = trained_looking_vae().encoder
    x = torch.rand(1, 3, 32, 32).repeat(2, 1, 1, 1) * 2 - 1
    mean, log_var = encoder(x, torch.tensor([0, 1]))
    assert mean.shape == log_var.shape == (2, Z_DIM)
    assert not torch.allclose(mean[0], mean[1])


def test_the_latent_is_the_mean_plus_sigma_times_the_given_noise():
    vae = trained_looking_vae()
    x, y = torch.rand(3, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 2])
    noise = torch.randn(3, Z_DIM)
    reconstruction, mean, log_var = vae(x, y, noise)
    z = mean + torch.exp(0.5 * log_var) * noise
    assert torch.allclose(reconstruction, vae.decoder(z, y))
    # The reparameterization carries the gradient to the encoder's outputs.
    vae.train()
    vae(x, y, noise)[0].sum().backward()
    assert vae.encoder.to_posterior.weight.grad.abs().sum() > 0


def vae_file(path, vae: ConditionalVAE, updates: int = 0) -> None:
    save_checkpoint(path, {"model": vae.state_dict(), "updates": updates,
                           "config": {"z_dim": Z_DIM, "num_classes": CLASSES, "encoder_width": 8,
                                      "decoder_width": 16},
                           "classes": [f"c{i}" for i in range(CLASSES)]})


def test_load_sampler_returns_the_trained_decoder_ready_to_sample(tmp_path):
    vae = trained_looking_vae()
    vae_file(tmp_path / "vae.pt", vae)
    decoder, info = load_sampler(tmp_path / "vae.pt")
    assert info == {"z_dim": Z_DIM, "num_classes": CLASSES, "classes": [f"c{i}" for i in range(5)]}
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    z, y = torch.randn(4, Z_DIM), torch.tensor([0, 1, 3, 4])
    assert torch.equal(decoder(z, y), vae.decoder(z, y))
